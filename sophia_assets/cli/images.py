"""`sophia images`: the container images deploy/images.yaml declares."""

from __future__ import annotations

import argparse


def add_verbs(verbs: argparse._SubParsersAction) -> None:
    group = verbs.add_parser(
        "images",
        help="the container images in deploy/images.yaml",
        description="The container images in deploy/images.yaml (SOPHIA_IMAGES), each with "
        "the digest of its build context.",
    )
    images_verbs = group.add_subparsers(title="images commands")
    listing = images_verbs.add_parser("list", help="images with their context digests")
    listing.add_argument("--files", action="store_true", help="also the files in each context")
    listing.set_defaults(handler=list_images)
    images_verbs.add_parser(
        "check",
        help="hadolint and our rules on each image's Dockerfile",
        description="Exit status 1 when any finding is an error or a warning.",
    ).set_defaults(handler=check_dockerfiles)


def list_images(args: argparse.Namespace) -> int:
    from sophia_assets.images.config import load_images

    for image in load_images():
        files = image.build_context.files()
        digest = image.build_context.digest()
        print(
            f"images/{image.name}  target={image.target or '(last)'}  "
            f"context={digest[:12]}  files={len(files)}  repository={image.repository}"
        )
        if args.files:
            print("".join(f"    {name}\n" for name in files), end="")
    return 0


def check_dockerfiles(args: argparse.Namespace) -> int:
    from sophia_assets.images.config import load_images
    from sophia_assets.images.rules import check_dockerfile, failing

    # A Dockerfile shared by several images is checked once, for all their targets.
    by_file: dict = {}
    for image in load_images():
        by_file.setdefault(image.dockerfile, []).append(image.target)
    failed = 0
    for dockerfile, targets in by_file.items():
        findings = check_dockerfile(dockerfile, targets)
        failed += len(failing(findings))
        print(f"{dockerfile}: {len(findings)} finding(s), {len(failing(findings))} failing")
        for finding in findings:
            print(f"  {finding}")
    return 1 if failed else 0

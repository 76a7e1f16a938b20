"""The code location loads, and its asset graph is the catalog's lineage."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sophia_assets.catalog import load_catalog
from sophia_assets.catalog.translator import FlowTranslator
from sophia_assets.home import FLOW_SPECS_DIR
from tests.support.paths import REPO
from tests.support.processes import run_python

SOURCE = dg.AssetKey(["postgres", "public", "documents"])
CDC = dg.AssetKey(["sophia", "postgresql_cdc"])
UPDATES = dg.AssetKey(["sophia", "vector_updates"])
INDEX = dg.AssetKey(["pinecone", "sophia-ai-vectors"])


@pytest.fixture(scope="module")
def asset_graph():
    from sophia_assets.definitions import defs

    return defs.resolve_asset_graph()


def test_definitions_are_loadable() -> None:
    dg.Definitions.validate_loadable(__import__("sophia_assets.definitions").definitions.defs)


def test_dagster_cli_validates_the_location() -> None:
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "sophia_assets.definitions"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("upstream", "downstream"),
    [(SOURCE, CDC), (CDC, UPDATES), (UPDATES, INDEX)],
    ids=["source->cdc", "cdc->vector_updates", "vector_updates->index"],
)
def test_lineage_edge(asset_graph, upstream: dg.AssetKey, downstream: dg.AssetKey) -> None:
    assert asset_graph.get(downstream).parent_keys == {upstream}


CODE_IMAGE = dg.AssetKey(["images", "code-location"])
GPU_IMAGE = dg.AssetKey(["images", "gpu-embedding"])
HELM_VALUES = dg.AssetKey(["deploy", "helm_values"])
CAPTURE_LOGIN = dg.AssetKey(["secrets", "postgres_capture"])
N8N_IMAGE = dg.AssetKey(["images", "n8n"])
STACKS = {
    dg.AssetKey(["infra", name]) for name in ("n8n", "dagster", "gpu-embedding", "search-api")
}


def test_graph_has_exactly_the_catalog_images_and_deployment_nodes(asset_graph) -> None:
    catalog = {SOURCE, CDC, UPDATES, INDEX}
    assert asset_graph.get_all_asset_keys() == catalog | {
        CODE_IMAGE,
        GPU_IMAGE,
        HELM_VALUES,
        CAPTURE_LOGIN,
        N8N_IMAGE,
        *STACKS,
    }
    assert asset_graph.get(SOURCE).parent_keys == set()
    assert asset_graph.get(INDEX).child_keys == set()
    # the images sit beside the data path, upstream of the deployment that uses them
    assert asset_graph.get(HELM_VALUES).parent_keys == {CODE_IMAGE}
    assert asset_graph.get(CODE_IMAGE).parent_keys == set()
    # each stack downstream of the image it deploys: images/... -> infra/...
    assert asset_graph.get(dg.AssetKey(["infra", "dagster"])).parent_keys == {CODE_IMAGE}
    assert asset_graph.get(dg.AssetKey(["infra", "gpu-embedding"])).parent_keys == {GPU_IMAGE}
    assert asset_graph.get(dg.AssetKey(["infra", "n8n"])).parent_keys == {N8N_IMAGE}


def test_only_what_has_compute_materializes(asset_graph) -> None:
    # The application's table is outside the platform: an external asset.
    assert asset_graph.materializable_asset_keys == {
        CDC,
        UPDATES,
        INDEX,
        CODE_IMAGE,
        GPU_IMAGE,
        HELM_VALUES,
        CAPTURE_LOGIN,
        *STACKS,
    }
    assert asset_graph.external_asset_keys == {SOURCE, N8N_IMAGE}


def test_freshness_policy_covers_exactly_the_data_path(asset_graph) -> None:
    fresh = {k for k in asset_graph.get_all_asset_keys() if asset_graph.get(k).freshness_policy}
    assert fresh == {CDC, UPDATES, INDEX}


def test_image_code_version_is_its_context_digest(asset_graph) -> None:
    from sophia_assets.images.config import load_images

    [image] = [i for i in load_images() if i.name == "code-location"]
    assert asset_graph.get(CODE_IMAGE).code_version == image.build_context.digest()
    # off by default: a build costs Build Cloud minutes
    assert asset_graph.get(CODE_IMAGE).automation_condition is None


def test_model_version_is_the_embeddings_code_version(asset_graph) -> None:
    version = asset_graph.get(UPDATES).code_version
    assert version.startswith("sentence-transformers/all-MiniLM-L6-v2@")
    assert len(version.rsplit("@", 1)[1]) == 16


def test_groups_kinds_owners_and_metadata(asset_graph) -> None:
    expected = {
        SOURCE: ("cdc", {"postgres"}, "flow_specs/source-postgres.flow.yaml"),
        CDC: ("cdc", {"estuary"}, "flow_specs/collections.flow.yaml"),
        UPDATES: ("embeddings", {"estuary", "pytorch"}, "flow_specs/collections.flow.yaml"),
        INDEX: (
            "vector_index",
            {"pinecone", "pgvector"},
            "flow_specs/materialize-pinecone.flow.yaml",
        ),
    }
    for key, (group, kinds, spec_file) in expected.items():
        node = asset_graph.get(key)
        assert node.group_name == group, key
        assert {
            tag.split("/", 2)[-1] for tag in node.tags if tag.startswith("dagster/kind/")
        } == kinds, key
        assert node.owners == ["team:data-platform"], key
        assert node.metadata["flow/spec_file"] == spec_file, key
        assert node.description, key
    # and nothing in the graph is nobody's: what the catalog does not own is the platform's
    owners = {key: asset_graph.get(key).owners for key in asset_graph.get_all_asset_keys()}
    assert all(owners.values()), [k for k, v in owners.items() if not v]
    assert owners[dg.AssetKey(["infra", "dagster"])] == ["team:platform"]
    columns = asset_graph.get(CDC).metadata["dagster/column_schema"].columns
    assert [c.name for c in columns] == ["id", "title", "body", "updated_at", "_meta"]
    assert asset_graph.get(SOURCE).metadata["dagster/table_name"] == "public.documents"


def test_descriptions_read_right_in_the_ui(asset_graph) -> None:
    """The UI renders descriptions as markdown, where `<chunk number>` is an HTML tag and
    vanishes; no asset or column description may hold one."""
    tag = re.compile(r"<[A-Za-z][^<>]*>")
    for key in asset_graph.get_all_asset_keys():
        node = asset_graph.get(key)
        texts = [node.description or ""]
        schema = node.metadata.get("dagster/column_schema")
        texts += [c.description or "" for c in schema.columns] if schema else []
        for text in texts:
            assert not tag.search(text), (key, text)


def _extended_specs(tmp_path: Path) -> Path:
    root = tmp_path / "flow_specs"
    shutil.copytree(FLOW_SPECS_DIR, root)
    collections = root / "collections.flow.yaml"
    doc = yaml.safe_load(collections.read_text())
    doc["collections"]["sophia/comments_cdc"] = {
        "key": ["/id"],
        "schema": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "integer"}, "text": {"type": "string"}},
        },
    }
    collections.write_text(yaml.safe_dump(doc, sort_keys=False))
    capture = root / "source-postgres.flow.yaml"
    doc = yaml.safe_load(capture.read_text())
    doc["captures"]["sophia/source-postgres"]["bindings"].append(
        {"resource": {"namespace": "public", "stream": "comments"}, "target": "sophia/comments_cdc"}
    )
    capture.write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def test_new_binding_appears_without_code_change(tmp_path: Path) -> None:
    specs = {
        s.key: s for s in FlowTranslator(load_catalog(_extended_specs(tmp_path))).build_specs()
    }
    comments = dg.AssetKey(["sophia", "comments_cdc"])
    assert [d.asset_key for d in specs[comments].deps] == [
        dg.AssetKey(["postgres", "public", "comments"])
    ]
    assert len(specs) == 6


def test_code_location_reads_flow_specs_from_the_environment(tmp_path: Path) -> None:
    root = _extended_specs(tmp_path)
    result = run_python(
        "from sophia_assets.definitions import defs;"
        "keys = defs.resolve_asset_graph().get_all_asset_keys();"
        "print(sorted(k.to_user_string() for k in keys))",
        env={"SOPHIA_FLOW_SPECS": str(root)},
    )
    assert "sophia/comments_cdc" in result.stdout
    assert "postgres/public/comments" in result.stdout


def test_broken_catalog_stops_the_location_with_every_problem(tmp_path: Path) -> None:
    root = tmp_path / "flow_specs"
    shutil.copytree(FLOW_SPECS_DIR, root)
    (root / "schemas/postgresql_cdc.schema.yaml").unlink()
    result = run_python(
        "import sophia_assets.definitions", check=False, env={"SOPHIA_FLOW_SPECS": str(root)}
    )
    assert result.returncode != 0
    assert "schemas/postgresql_cdc.schema.yaml" in result.stderr
    assert "does not exist; fix the path or create it" in result.stderr


def test_rotation_runs_on_a_schedule_that_is_on_by_default() -> None:
    from sophia_assets.definitions import defs

    schedule = defs.get_schedule_def("rotate_secrets_weekly")
    assert schedule.job_name == "rotate_secrets"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "0 4 * * 1"
    job = defs.resolve_job_def("rotate_secrets")
    assert job.asset_layer.executable_asset_keys == {dg.AssetKey(["secrets", "postgres_capture"])}


def _two_derivations_and_indexes(tmp_path: Path) -> Path:
    """The extended catalog plus a second embedding derivation (of the comments) and a second
    vector index fed by it."""
    root = _extended_specs(tmp_path)
    collections = root / "collections.flow.yaml"
    doc = yaml.safe_load(collections.read_text())
    derivation = dict(doc["collections"]["sophia/vector_updates"]["derive"])
    derivation["transforms"] = [
        {"name": "embedComments", "source": "sophia/comments_cdc", "shuffle": {"key": ["/id"]}}
    ]
    derivation["using"]["connector"]["config"]["textFields"] = ["text"]
    doc["collections"]["sophia/comment_vectors"] = {
        "schema": "schemas/vector_updates.schema.yaml",
        "key": ["/embedding_id"],
        "derive": derivation,
    }
    collections.write_text(yaml.safe_dump(doc, sort_keys=False))
    materialization = root / "materialize-pinecone.flow.yaml"
    doc = yaml.safe_load(materialization.read_text())
    second = yaml.safe_load(yaml.safe_dump(doc["materializations"]["pinecone/vectors"]))
    second["endpoint"]["connector"]["config"]["index"] = "sophia-comment-vectors"
    second["bindings"][0]["source"] = "sophia/comment_vectors"
    doc["materializations"]["pinecone/comments"] = second
    materialization.write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


GRAPH_REPORT = """
import json
from sophia_assets.definitions import defs
graph = defs.resolve_asset_graph()
report = {
    "parents": {
        k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
        for k in graph.materializable_asset_keys
    },
    "sensors": {
        s.name: [k.to_user_string() for k in s.asset_selection.resolve(graph)]
        if s.asset_selection else None
        for s in defs.sensors if s.name.startswith("estuary")
    },
    "checks": sorted(k.asset_key.to_user_string() + ":" + k.name for k in graph.asset_check_keys),
}
print(json.dumps(report))
"""


def test_two_derivations_and_two_indexes_build_their_own_graph_and_sensors(
    tmp_path: Path,
) -> None:
    """The catalog says what each collection is: every embedding derivation gets its asset
    and its own Estuary sensor, every vector index its asset and checks, wired to its source."""
    import json

    root = _two_derivations_and_indexes(tmp_path)
    result = run_python(GRAPH_REPORT, env={"SOPHIA_FLOW_SPECS": str(root)})
    report = json.loads(result.stdout.splitlines()[-1])
    parents = report["parents"]
    assert parents["sophia/comment_vectors"] == ["sophia/comments_cdc"]
    assert parents["sophia/vector_updates"] == ["sophia/postgresql_cdc"]
    assert parents["pinecone/sophia-comment-vectors"] == ["sophia/comment_vectors"]
    assert parents["pinecone/sophia-ai-vectors"] == ["sophia/vector_updates"]
    assert sorted(report["sensors"]) == [
        "estuary__sophia__comment_vectors",
        "estuary__sophia__vector_updates",
    ]
    for name in ("comment_vectors", "vector_updates"):
        assert f"sophia/{name}:embedding_coverage" in report["checks"]
    for index in ("sophia-ai-vectors", "sophia-comment-vectors"):
        assert f"pinecone/{index}:index_consistency" in report["checks"]


def test_every_sensor_says_what_it_does() -> None:
    from sophia_assets.definitions import defs

    sensors = list(defs.sensors or [])
    assert sensors and all(s.description for s in sensors), [
        s.name for s in sensors if not s.description
    ]

"""The Pulumi programs under `infra/`, run with Pulumi's own mocks: the resources they declare,
their properties, and that no secret from the stack config appears anywhere in plain text."""

from __future__ import annotations

import asyncio
from typing import Any

import pulumi
import pytest
from pulumi.runtime import MockCallArgs, MockResourceArgs, Mocks

SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's marker of a secret value


class Recorder(Mocks):
    def __init__(self) -> None:
        self.resources: list[MockResourceArgs] = []

    def new_resource(self, args: MockResourceArgs):
        self.resources.append(args)
        outputs = dict(args.inputs)
        if args.typ == "pulumi-python:dynamic:Resource":
            outputs["key_id"] = "lambda-key-1"
        return [f"{args.name}-id", outputs]

    def call(self, args: MockCallArgs):
        return {}

    def of(self, typ: str) -> dict[str, dict]:
        return {r.name: r.inputs for r in self.resources if r.typ == typ}


def _run(program, config: dict[str, str], secrets: dict[str, str]) -> tuple[Recorder, dict]:
    recorder = Recorder()
    # Pulumi's runtime wants a current event loop; an earlier test may have closed it.
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_mocks(recorder, project="sophia", stack="test", preview=False)
    pulumi.runtime.set_all_config(
        {f"sophia:{k}": v for k, v in {**config, **secrets}.items()},
        secret_keys=[f"sophia:{k}" for k in secrets],
    )
    exports: dict[str, Any] = {}
    original = pulumi.export
    pulumi.export = lambda name, value: exports.__setitem__(name, value)
    try:
        pulumi.runtime.test(lambda: program() or pulumi.Output.from_input(1))()
    finally:
        pulumi.export = original
    return recorder, exports


def _plain_occurrences(value: Any, needle: str, path: str = "") -> list[str]:
    """Where `needle` appears outside a secret-marked value."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG):
            return []
        return [p for k, v in value.items() for p in _plain_occurrences(v, needle, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        return [
            p for i, v in enumerate(value) for p in _plain_occurrences(v, needle, f"{path}[{i}]")
        ]
    return [path] if isinstance(value, str) and needle in value else []


def _assert_no_plain_secret(recorder: Recorder, secrets: dict[str, str]) -> None:
    for secret in secrets.values():
        for resource in recorder.resources:
            assert _plain_occurrences(resource.inputs, secret) == [], (resource.name, secret)


def _env(container: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


N8N_SECRETS = {"n8nEncryptionKey": "enc-key-not-plain", "n8nDatabasePassword": "db-pw-not-plain"}


@pytest.fixture(scope="module")
def n8n():
    from infra import n8n

    return _run(n8n.program, {"postgresCidr": "10.20.0.0/16"}, N8N_SECRETS)


def test_n8n_runs_in_queue_mode_with_main_and_workers(n8n) -> None:
    recorder, exports = n8n
    deployments = recorder.of("kubernetes:apps/v1:Deployment")
    assert set(deployments) == {"n8n-main", "n8n-worker", "n8n-redis"}
    for name in ("n8n-main", "n8n-worker"):
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        env = _env(container)
        assert env["EXECUTIONS_MODE"] == "queue"
        assert (env["QUEUE_BULL_REDIS_HOST"], env["QUEUE_BULL_REDIS_PORT"]) == ("n8n-redis", "6379")
        assert env["N8N_ENCRYPTION_KEY"] == {
            "secretKeyRef": {"name": "n8n-secrets", "key": "N8N_ENCRYPTION_KEY"}
        }
        assert container["image"] == "n8nio/n8n:2.41.1"
        assert container["resources"]["limits"] and container["resources"]["requests"]
    [worker] = deployments["n8n-worker"]["spec"]["template"]["spec"]["containers"]
    assert worker["args"] == ["worker", "--concurrency=10"]
    assert worker["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    assert exports["url"] == "http://n8n-main.n8n.svc:5678"


def test_n8n_workers_scale_2_to_20_on_70_percent_cpu(n8n) -> None:
    [hpa] = n8n[0].of("kubernetes:autoscaling/v2:HorizontalPodAutoscaler").values()
    spec = hpa["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 20)
    assert spec["scaleTargetRef"]["name"] == "n8n-worker"
    assert spec["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 70,
    }


def test_n8n_network_policies_allow_only_what_it_needs(n8n) -> None:
    policies = n8n[0].of("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    redis = policies["n8n-redis-ingress"]["spec"]["ingress"]
    assert redis == [
        {
            "from": [
                {"podSelector": {"matchLabels": {"app": "n8n", "role": "main"}}},
                {"podSelector": {"matchLabels": {"app": "n8n", "role": "worker"}}},
            ],
            "ports": [{"port": 6379}],
        }
    ]
    ui = policies["n8n-main-ingress"]["spec"]["ingress"][0]
    assert ui["ports"] == [{"port": 5678}]
    egress = policies["n8n-egress"]["spec"]["egress"]
    assert {"cidr": "10.20.0.0/16"} in [
        t.get("ipBlock") for rule in egress for t in rule.get("to", [])
    ]
    assert sorted(p["port"] for rule in egress for p in rule["ports"]) == [53, 53, 443, 5432, 6379]


def test_n8n_secrets_are_never_plain(n8n) -> None:
    recorder, exports = n8n
    _assert_no_plain_secret(recorder, N8N_SECRETS)
    [secret] = recorder.of("kubernetes:core/v1:Secret").values()
    assert secret["stringData"][SECRET_SIG]  # the whole value travels as a secret
    assert all(s not in str(exports) for s in N8N_SECRETS.values())


DAGSTER_SECRETS = {
    "postgresUrl": "postgresql://app:pw-not-plain@db/sophia",
    "pineconeApiKey": "pc-not-plain",
    "pineconeHost": "idx.example.internal",
    "lambdaApiKey": "lambda-not-plain",
    "dagsterPostgresPassword": "dagster-pw-not-plain",
}


def test_dagster_stack_deploys_the_built_image_with_the_chart() -> None:
    from infra import dagster_deployment

    image = "acme/sophia-code-location:0123456789ab@sha256:" + "c" * 64
    recorder, exports = _run(
        dagster_deployment.program,
        {"codeLocationImage": image, "chartRepository": "https://charts.example.internal"},
        DAGSTER_SECRETS,
    )
    [release] = recorder.of("kubernetes:helm.sh/v3:Release").values()
    assert release["chart"] == "dagster" and release["version"] == "1.13.27"
    [deployment] = release["values"]["dagster-user-deployments"]["deployments"]
    assert deployment["image"]["repository"] == "acme/sophia-code-location"
    assert deployment["image"]["tag"] == "0123456789ab@sha256:" + "c" * 64
    assert release["values"]["runLauncher"]["type"] == "K8sRunLauncher"
    secrets = recorder.of("kubernetes:core/v1:Secret")
    assert set(secrets) == {"sophia-platform", "dagster-postgresql-secret"}
    _assert_no_plain_secret(recorder, DAGSTER_SECRETS)
    assert exports["image"] == image
    # only the webserver and the daemon reach the code server's gRPC port
    [policy] = recorder.of("kubernetes:networking.k8s.io/v1:NetworkPolicy").values()
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"component": "user-deployments"}}
    assert spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    assert rule["ports"] == [{"port": deployment["port"], "protocol": "TCP"}]
    callers = [peer["podSelector"]["matchLabels"]["component"] for peer in rule["from"]]
    assert callers == ["dagster-webserver", "dagster-daemon"]
    assert all(set(peer) == {"podSelector"} for peer in rule["from"])  # no namespace-wide peer


def test_gpu_embedding_stack_registers_the_ssh_key_and_exports_the_runner_settings() -> None:
    from infra import gpu_embedding

    recorder, exports = _run(
        gpu_embedding.program,
        {"sshPublicKey": "ssh-ed25519 AAAAC3Nz sophia", "fileSystem": "sophia-models"},
        {},
    )
    [key] = recorder.of("pulumi-python:dynamic:Resource").values()
    assert key["name"] == "sophia-embedding"
    assert key["public_key"] == "ssh-ed25519 AAAAC3Nz sophia"
    assert exports["sshKeyName"] == "sophia-embedding"
    assert exports["fileSystem"] == "sophia-models"
    assert exports["instanceChoices"][0] == "gpu_1x_a10@us-east-1"


SEARCH_API_SECRETS = {
    "searchApiKeys": "api-key-not-plain-1,api-key-not-plain-2",
    "postgresUrl": "postgresql://app:pw-not-plain@db/sophia",
    "pineconeApiKey": "pc-not-plain",
    "pineconeHost": "idx.example.internal",
}


@pytest.fixture(scope="module")
def search_api():
    from infra import search_api

    image = "acme/sophia-code-location:0123456789ab@sha256:" + "d" * 64
    return _run(
        search_api.program,
        {"searchApiImage": image, "ingressNamespace": "edge", "postgresCidr": "10.30.0.0/16"},
        SEARCH_API_SECRETS,
    )


def test_search_api_serves_the_image_as_non_root_and_probes_readyz(search_api) -> None:
    recorder, exports = search_api
    [deployment] = recorder.of("kubernetes:apps/v1:Deployment").values()
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"]
    [container] = pod["containers"]
    assert container["image"] == exports["image"]
    assert container["image"].startswith("acme/sophia-code-location:")
    assert container["command"][:3] == ["sophia", "api", "serve"]
    assert "--port" in container["command"] and "8080" in container["command"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    # what deploy/monitoring/prometheus-k8s.yml discovers the pods by
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert _env(container)["SOPHIA_API_KEYS"] == {
        "secretKeyRef": {"name": "search-api", "key": "SOPHIA_API_KEYS"}
    }
    [service] = recorder.of("kubernetes:core/v1:Service").values()
    assert service["spec"]["ports"][0]["targetPort"] == 8080
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_search_api_scales_on_cpu(search_api) -> None:
    [hpa] = search_api[0].of("kubernetes:autoscaling/v2:HorizontalPodAutoscaler").values()
    spec = hpa["spec"]
    assert spec["scaleTargetRef"]["name"] == "search-api"
    assert spec["minReplicas"] >= 2 and spec["maxReplicas"] > spec["minReplicas"]
    assert spec["metrics"][0]["resource"]["name"] == "cpu"


def test_search_api_admits_only_the_ingress_and_monitoring_namespaces(search_api) -> None:
    policies = search_api[0].of("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    deny = policies["search-api-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    [rule] = policies["search-api-ingress"]["spec"]["ingress"]
    assert rule == {
        "from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}
            for name in ("edge", "monitoring")  # the ingress controller's, Prometheus'
        ],
        "ports": [{"port": 8080}],
    }
    egress = policies["search-api-egress"]["spec"]["egress"]
    assert {"cidr": "10.30.0.0/16"} in [
        t.get("ipBlock") for rule in egress for t in rule.get("to", [])
    ]
    assert sorted(p["port"] for rule in egress for p in rule["ports"]) == [53, 53, 443, 5432]


def test_search_api_secrets_are_never_plain(search_api) -> None:
    recorder, exports = search_api
    _assert_no_plain_secret(recorder, SEARCH_API_SECRETS)
    assert all(s not in str(exports) for s in SEARCH_API_SECRETS.values())

"""Stack `dagster`: the code location image deployed with the official Dagster Helm chart.

The chart's values are deploy/helm/values.yaml with the image the stack is given (the one
images/code-location built, pinned by digest); the platform's secrets (Postgres URL, Pinecone
and Lambda keys) go into the Secret `sophia-platform` from the stack's secret config (ESC),
and Dagster's own Postgres password into `dagster-postgresql-secret`. A network policy lets
only the chart's webserver and daemon pods reach the code server's gRPC port: the code server
runs any op it is asked to, so nothing else in the cluster may ask. The monitoring goes with
it as ConfigMaps: the Grafana dashboard (sophia_assets.metrics.dashboard), labelled for the
Grafana chart's dashboard sidecar, and deploy/monitoring/alerts.yaml, labelled for Prometheus."""

import pulumi
import pulumi_kubernetes as k8s

from sophia_assets.home import PROJECT_ROOT
from sophia_assets.images.helm_values import chart_values
from sophia_assets.metrics.dashboard import dashboard_json

ALERT_RULES = PROJECT_ROOT / "deploy" / "monitoring" / "alerts.yaml"

PLATFORM_SECRETS = {
    "SOPHIA_POSTGRES_URL": "postgresUrl",
    "SOPHIA_PINECONE_API_KEY": "pineconeApiKey",
    "SOPHIA_PINECONE_HOST": "pineconeHost",
    "SOPHIA_LAMBDA_API_KEY": "lambdaApiKey",
}


def program() -> None:
    config = pulumi.Config("sophia")
    namespace_name = config.get("namespace") or "sophia"
    image = config.require("codeLocationImage")
    namespace = k8s.core.v1.Namespace("sophia", metadata={"name": namespace_name})
    k8s.core.v1.Secret(
        "sophia-platform",
        metadata={"name": "sophia-platform", "namespace": namespace.metadata["name"]},
        string_data={env: config.require_secret(key) for env, key in PLATFORM_SECRETS.items()},
    )
    k8s.core.v1.Secret(
        "dagster-postgresql-secret",
        metadata={"name": "dagster-postgresql-secret", "namespace": namespace.metadata["name"]},
        string_data={"postgresql-password": config.require_secret("dagsterPostgresPassword")},
    )
    values = chart_values(image)
    _code_server_policy(namespace.metadata["name"], values)
    # Where Prometheus and Grafana run: a pod mounts ConfigMaps of its own namespace only.
    _monitoring(config.get("monitoringNamespace") or "monitoring")
    release = k8s.helm.v3.Release(
        "dagster",
        chart="dagster",
        version=config.get("chartVersion") or "1.13.27",
        repository_opts={"repo": config.require("chartRepository")},
        namespace=namespace.metadata["name"],
        values=values,
    )
    pulumi.export("namespace", namespace.metadata["name"])
    pulumi.export("image", image)
    pulumi.export("release", release.name)


# the component labels the official chart puts on its pods
CODE_SERVER = {"component": "user-deployments"}
CALLERS = ({"component": "dagster-webserver"}, {"component": "dagster-daemon"})


def _code_server_policy(namespace, values: dict) -> None:
    ports = sorted({d["port"] for d in values["dagster-user-deployments"]["deployments"]})
    k8s.networking.v1.NetworkPolicy(
        "code-server-ingress",
        metadata={"name": "code-server-ingress", "namespace": namespace},
        spec={
            "podSelector": {"matchLabels": CODE_SERVER},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": labels}} for labels in CALLERS],
                    "ports": [{"port": port, "protocol": "TCP"} for port in ports],
                }
            ],
        },
    )


def _monitoring(namespace) -> None:
    # Labels, not API calls: the Grafana chart's sidecar loads every ConfigMap labelled
    # grafana_dashboard, and the Prometheus setup loads the rules labelled prometheus_rule.
    k8s.core.v1.ConfigMap(
        "sophia-grafana-dashboard",
        metadata={
            "name": "sophia-grafana-dashboard",
            "namespace": namespace,
            "labels": {"grafana_dashboard": "1"},
        },
        data={"sophia.json": dashboard_json()},
    )
    k8s.core.v1.ConfigMap(
        "sophia-prometheus-rules",
        metadata={
            "name": "sophia-prometheus-rules",
            "namespace": namespace,
            "labels": {"prometheus_rule": "1"},
        },
        data={ALERT_RULES.name: ALERT_RULES.read_text()},
    )

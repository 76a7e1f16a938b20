"""Stack `search-api`: `sophia api serve` on Kubernetes, from the code-location image.

The image already runs as the non-root user 10001; the pod says so too (runAsNonRoot), so a
change of the image cannot quietly run it as root. API keys, the platform's Postgres URL and
Pinecone's settings come from the stack's secret config (ESC) through one Secret. The pods are
ready when /readyz says the model is loaded, the index reachable and its lag under the
threshold; alive while /healthz answers. The HPA scales 2..10 on 70% CPU (a query is CPU-bound
embedding). Network policies admit only the ingress controller's namespace to the API port, and
Prometheus' namespace for /metrics (the pods carry the `prometheus.io/*` annotations that
deploy/monitoring/prometheus-k8s.yml discovers), and let the pods out only to DNS, Postgres and
HTTPS (Pinecone)."""

import pulumi
import pulumi_kubernetes as k8s

PORT = 8080
LABELS = {"app": "sophia-search-api"}
SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
          "prometheus.io/path": "/metrics"}  # fmt: skip
RESOURCES = {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}}
# Stack secret config key -> the environment variable the service reads.
SECRETS = {
    "SOPHIA_API_KEYS": "searchApiKeys",
    "SOPHIA_POSTGRES_URL": "postgresUrl",
    "SOPHIA_PINECONE_API_KEY": "pineconeApiKey",
    "SOPHIA_PINECONE_HOST": "pineconeHost",
}


def program() -> None:
    config = pulumi.Config("sophia")
    namespace_name = config.get("namespace") or "sophia-search"
    image = config.require("searchApiImage")
    ingress_namespace = config.get("ingressNamespace") or "ingress-nginx"
    monitoring_namespace = config.get("monitoringNamespace") or "monitoring"
    postgres_cidr = config.get("postgresCidr") or "10.0.0.0/8"
    max_lag = config.get("maxLagSeconds") or "300"

    namespace = k8s.core.v1.Namespace("sophia-search", metadata={"name": namespace_name})
    meta = lambda name: {"name": name, "namespace": namespace.metadata["name"]}  # noqa: E731
    secret = k8s.core.v1.Secret(
        "search-api",
        metadata=meta("search-api"),
        string_data={env: config.require_secret(key) for env, key in SECRETS.items()},
    )
    env = [
        {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": secret.metadata["name"], "key": name}},
        }
        for name in SECRETS
    ] + [{"name": "SOPHIA_HOME", "value": "/tmp/sophia"}]
    probe = lambda path, period: {  # noqa: E731
        "httpGet": {"path": path, "port": PORT},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    container = {
        "name": "search-api",
        "image": image,
        "command": ["sophia", "api", "serve", "--host", "0.0.0.0", "--port", str(PORT)],
        "args": ["--max-lag-seconds", max_lag],
        "env": env,
        "ports": [{"name": "http", "containerPort": PORT}],
        "resources": RESOURCES,
        "readinessProbe": probe("/readyz", 10),
        "livenessProbe": probe("/healthz", 20),
        "startupProbe": {**probe("/healthz", 5), "failureThreshold": 24},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    deployment = k8s.apps.v1.Deployment(
        "search-api",
        metadata=meta("search-api"),
        spec={
            "replicas": 2,
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS, "annotations": SCRAPE},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                    },
                    "containers": [container],
                },
            },
        },
    )
    k8s.core.v1.Service(
        "search-api",
        metadata=meta("search-api"),
        spec={"selector": LABELS, "ports": [{"name": "http", "port": 80, "targetPort": PORT}]},
    )
    k8s.autoscaling.v2.HorizontalPodAutoscaler(
        "search-api",
        metadata=meta("search-api"),
        spec={
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment.metadata["name"],
            },
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    )
    _network_policies(meta, ingress_namespace, monitoring_namespace, postgres_cidr)
    pulumi.export("namespace", namespace.metadata["name"])
    pulumi.export("image", image)
    pulumi.export("url", f"http://search-api.{namespace_name}.svc")


NAMESPACE_NAME = "kubernetes.io/metadata.name"  # the label Kubernetes puts on every namespace


def _network_policies(
    meta, ingress_namespace: str, monitoring_namespace: str, postgres_cidr: str
) -> None:
    k8s.networking.v1.NetworkPolicy(
        "search-api-default-deny",
        metadata=meta("default-deny"),
        spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    )
    k8s.networking.v1.NetworkPolicy(
        "search-api-ingress",
        metadata=meta("search-api-ingress"),
        spec={
            "podSelector": {"matchLabels": LABELS},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME: namespace}}}
                        for namespace in (ingress_namespace, monitoring_namespace)
                    ],
                    "ports": [{"port": PORT}],
                }
            ],
        },
    )
    k8s.networking.v1.NetworkPolicy(
        "search-api-egress",
        metadata=meta("search-api-egress"),
        spec={
            "podSelector": {"matchLabels": LABELS},
            "policyTypes": ["Egress"],
            "egress": [
                {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
                {"to": [{"ipBlock": {"cidr": postgres_cidr}}], "ports": [{"port": 5432}]},
                {"ports": [{"port": 443}]},  # Pinecone, when it is the index
            ],
        },
    )

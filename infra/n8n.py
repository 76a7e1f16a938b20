"""Stack `n8n`: n8n in queue mode on Kubernetes.

A main Deployment (UI, webhooks, API) and a worker Deployment (`n8n worker`) share Redis
(Bull queues) and one encryption key, kept in a Secret from the stack's secret config (ESC).
Workers scale 2..20 on 70% CPU. Network policies deny everything but what n8n needs: the
ingress controller to the main UI, both to Redis and Postgres, DNS, and HTTPS out."""

import pulumi
import pulumi_kubernetes as k8s

N8N_PORT = 5678
REDIS_PORT = 6379
MAIN = {"app": "n8n", "role": "main"}
WORKER = {"app": "n8n", "role": "worker"}
REDIS = {"app": "n8n-redis"}
RESOURCES = {
    "main": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
    "worker": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
    "redis": {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "500m", "memory": "512Mi"},
    },
}


def program() -> None:
    config = pulumi.Config("sophia")
    namespace_name = config.get("namespace") or "n8n"
    image = config.get("n8nImage") or "n8nio/n8n:2.41.1"
    redis_image = config.get("redisImage") or "redis:7.4.2-alpine"
    postgres_cidr = config.get("postgresCidr") or "10.0.0.0/8"
    ingress_namespace = config.get("ingressNamespace") or "ingress-nginx"

    namespace = k8s.core.v1.Namespace("n8n", metadata={"name": namespace_name})
    meta = lambda name: {"name": name, "namespace": namespace.metadata["name"]}  # noqa: E731

    secret = k8s.core.v1.Secret(
        "n8n-secrets",
        metadata=meta("n8n-secrets"),
        string_data={
            "N8N_ENCRYPTION_KEY": config.require_secret("n8nEncryptionKey"),
            "DB_POSTGRESDB_PASSWORD": config.require_secret("n8nDatabasePassword"),
        },
    )
    from_secret = lambda key: {  # noqa: E731
        "name": key,
        "valueFrom": {"secretKeyRef": {"name": secret.metadata["name"], "key": key}},
    }
    env = [
        {"name": "EXECUTIONS_MODE", "value": "queue"},
        {"name": "QUEUE_BULL_REDIS_HOST", "value": "n8n-redis"},
        {"name": "QUEUE_BULL_REDIS_PORT", "value": str(REDIS_PORT)},
        {"name": "DB_TYPE", "value": "postgresdb"},
        {"name": "DB_POSTGRESDB_HOST", "value": config.get("postgresHost") or "postgres"},
        {"name": "DB_POSTGRESDB_DATABASE", "value": "n8n"},
        {"name": "DB_POSTGRESDB_USER", "value": "n8n"},
        from_secret("N8N_ENCRYPTION_KEY"),
        from_secret("DB_POSTGRESDB_PASSWORD"),
    ]

    _deployment("n8n-redis", meta, REDIS, 1, redis_image, [], REDIS_PORT, RESOURCES["redis"])
    k8s.core.v1.Service(
        "n8n-redis",
        metadata=meta("n8n-redis"),
        spec={"selector": REDIS, "ports": [{"port": REDIS_PORT}]},
    )
    _deployment("n8n-main", meta, MAIN, 1, image, env, N8N_PORT, RESOURCES["main"])
    k8s.core.v1.Service(
        "n8n-main",
        metadata=meta("n8n-main"),
        spec={"selector": MAIN, "ports": [{"port": N8N_PORT}]},
    )
    worker = _deployment(
        "n8n-worker",
        meta,
        WORKER,
        2,
        image,
        env,
        None,
        RESOURCES["worker"],
        args=["worker", f"--concurrency={config.get_int('workerConcurrency') or 10}"],
    )
    k8s.autoscaling.v2.HorizontalPodAutoscaler(
        "n8n-worker",
        metadata=meta("n8n-worker"),
        spec={
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": worker.metadata["name"],
            },
            "minReplicas": 2,
            "maxReplicas": 20,
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
    _network_policies(meta, postgres_cidr, ingress_namespace)
    pulumi.export("namespace", namespace.metadata["name"])
    pulumi.export("url", f"http://n8n-main.{namespace_name}.svc:{N8N_PORT}")


def _deployment(name, meta, labels, replicas, image, env, port, resources, args=None):
    container = {
        "name": name,
        "image": image,
        "env": env,
        "resources": resources,
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }
    if args:
        container["args"] = args
    if port:
        container["ports"] = [{"containerPort": port}]
    return k8s.apps.v1.Deployment(
        name,
        metadata=meta(name),
        spec={
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    )


def _network_policies(meta, postgres_cidr: str, ingress_namespace: str) -> None:
    dns = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    n8n_pods = [{"podSelector": {"matchLabels": MAIN}}, {"podSelector": {"matchLabels": WORKER}}]
    k8s.networking.v1.NetworkPolicy(
        "default-deny",
        metadata=meta("default-deny"),
        spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    )
    k8s.networking.v1.NetworkPolicy(
        "n8n-main-ingress",
        metadata=meta("n8n-main-ingress"),
        spec={
            "podSelector": {"matchLabels": MAIN},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": ingress_namespace}
                            }
                        }
                    ],
                    "ports": [{"port": N8N_PORT}],
                }
            ],
        },
    )
    k8s.networking.v1.NetworkPolicy(
        "n8n-redis-ingress",
        metadata=meta("n8n-redis-ingress"),
        spec={
            "podSelector": {"matchLabels": REDIS},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": n8n_pods, "ports": [{"port": REDIS_PORT}]}],
        },
    )
    k8s.networking.v1.NetworkPolicy(
        "n8n-egress",
        metadata=meta("n8n-egress"),
        spec={
            "podSelector": {"matchLabels": {"app": "n8n"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"podSelector": {"matchLabels": REDIS}}], "ports": [{"port": REDIS_PORT}]},
                {"to": [{"ipBlock": {"cidr": postgres_cidr}}], "ports": [{"port": 5432}]},
                dns,
                {"ports": [{"port": 443}]},  # workflows call HTTPS APIs
            ],
        },
    )

"""Stack `gpu-embedding`: what the Lambda GPU runner needs, as stack outputs.

The SSH key the runner logs in with is registered in Lambda Cloud by a dynamic resource that
uses our own Lambda client (there is no Lambda provider); its public half comes from config,
the private half never leaves the machine that made it. Outputs: the key's name, the
instance choices and the file system to mount."""

import os

import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


class _SshKeyProvider(ResourceProvider):
    def create(self, props: dict) -> CreateResult:
        from sophia_assets.gpu.lambda_api import LambdaCloud

        with LambdaCloud(os.environ["SOPHIA_LAMBDA_API_KEY"], props["api_url"]) as client:
            key = client.add_ssh_key(props["name"], props["public_key"])
        return CreateResult(id_=key.id, outs={**props, "key_id": key.id})


class LambdaSshKey(Resource):
    """An SSH public key registered in Lambda Cloud (deleted by hand: the API's delete call
    is not part of the runner's needs)."""

    key_id: pulumi.Output[str]

    def __init__(self, name: str, public_key: str, api_url: str, opts=None):
        super().__init__(
            _SshKeyProvider(),
            name,
            {"name": name, "public_key": public_key, "api_url": api_url, "key_id": None},
            opts,
        )


def program() -> None:
    config = pulumi.Config("sophia")
    key_name = config.get("sshKeyName") or "sophia-embedding"
    key = LambdaSshKey(
        key_name,
        public_key=config.require("sshPublicKey"),
        api_url=config.get("lambdaApiUrl") or "https://cloud.lambda.ai",
    )
    pulumi.export("sshKeyName", key_name)
    pulumi.export("sshKeyId", key.key_id)
    pulumi.export(
        "instanceChoices",
        config.get_object("instanceChoices") or ["gpu_1x_a10@us-east-1", "gpu_1x_a100@us-east-1"],
    )
    pulumi.export("fileSystem", config.get("fileSystem") or "")

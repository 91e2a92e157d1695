"""The Kubernetes deployment without a cluster: the Job dagster-k8s would submit for a step."""

import re
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import kubernetes
import pytest
import yaml
from dagster_k8s import k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import construct_dagster_k8s_job, get_user_defined_k8s_config

from vq_assets.definitions import build_definitions
from vq_assets.defs.k8s import GPU_NODE_SELECTOR, GPU_RESOURCE, executor_for_deployment

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GPU_ASSETS = ["video_embeddings", "quality_model", "model_evaluation", "quality_sweep"]
DUCKDB_ASSETS = [
    "raw_videos",
    "watch_events",
    "video_watch_daily",
    "video_labels_7d",
    "creator_features",
    "retrieval_prior",
    "training_set",
]


def _values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def _code_location() -> dict:
    (location,) = _values()["dagster-user-deployments"]["deployments"]
    return location


def _image() -> str:
    image = _code_location()["image"]
    return f"{image['repository']}:{image['tag']}"


def step_job(asset: str) -> kubernetes.client.V1Job:
    """What `K8sStepHandler.launch_step` builds for the asset's step: the chart's run launcher
    settings, the code location's image, merged with the step's `dagster-k8s/config` tag."""
    step_tags = build_definitions().resolve_assets_def(asset).op.tags
    launcher = SimpleNamespace(  # the K8sRunLauncher the chart configures
        job_image=None,
        dagster_home="/opt/dagster/dagster_home",
        instance_config_map="vq-dagster-instance",
        postgres_password_secret=_values()["global"]["postgresqlSecretName"],
    )
    context = K8sContainerContext(namespace="vq", env_secrets=["vq-secrets"]).merge(
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags))
    )
    return construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(_image(), launcher),
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{asset.replace('_', '-')}",
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/op": asset},
    )


@pytest.mark.parametrize("asset", GPU_ASSETS)
def test_gpu_step_pods_request_a_gpu_on_gpu_nodes(asset: str) -> None:
    job = step_job(asset)
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.image == _image()
    assert container.resources.requests[GPU_RESOURCE] == "1"
    assert container.resources.limits[GPU_RESOURCE] == "1"
    assert container.resources.requests["memory"] and container.resources.requests["cpu"]
    assert pod.node_selector == GPU_NODE_SELECTOR
    tolerations = [(t.key, t.operator, t.effect) for t in pod.tolerations]
    assert (GPU_RESOURCE, "Exists", "NoSchedule") in tolerations
    assert container.args == ["dagster", "api", "execute_step"]


@pytest.mark.parametrize("asset", DUCKDB_ASSETS)
def test_duckdb_step_pods_request_memory_and_no_gpu(asset: str) -> None:
    pod = step_job(asset).spec.template.spec
    (container,) = pod.containers
    requests, limits = container.resources.requests, container.resources.limits
    assert _mib(requests["memory"]) >= 1024
    assert _mib(limits["memory"]) > _mib(requests["memory"])
    # DuckDB's own bound sits below the smallest pod limit, so it spills rather than dies.
    env = {e["name"]: e["value"] for e in _code_location()["env"]}
    assert _mib(env["VQ_DUCKDB_MEMORY_LIMIT"]) < _mib(limits["memory"])
    assert GPU_RESOURCE not in requests and not pod.node_selector and not pod.tolerations


def _mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)\s*([A-Za-z]*)", quantity).groups()
    scale = {"Mi": 1, "Gi": 1024, "MB": 1e6 / 2**20, "GB": 1e9 / 2**20, "": 1 / 2**20}
    return float(number) * scale[unit]


def test_the_executor_is_k8s_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VQ_EXECUTOR", raising=False)
    assert executor_for_deployment() is None
    monkeypatch.setenv("VQ_EXECUTOR", "k8s")
    assert executor_for_deployment() is k8s_job_executor
    defs = dg.Definitions.merge(build_definitions(), dg.Definitions(executor=k8s_job_executor))
    assert defs.resolve_job_def("daily_chain").executor_def is k8s_job_executor
    monkeypatch.setenv("VQ_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="VQ_EXECUTOR"):
        executor_for_deployment()


def test_helm_values_wire_the_code_location_launcher_and_postgres_secret() -> None:
    values = _values()
    location = _code_location()
    assert location["dagsterApiGrpcArgs"] == ["--module-name", "vq_assets.definitions"]
    env = {e["name"]: e["value"] for e in location["env"]}
    assert env["VQ_EXECUTOR"] == "k8s" and env["VQ_DEPLOYMENT"] == "production"
    assert env["VQ_LAKE"].startswith("s3://")
    assert location["includeConfigInLaunchedRuns"]["enabled"] is True
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    # No secret values in the file: secrets are only named.
    text = (DEPLOY / "helm" / "values.yaml").read_text()
    assert not re.search(r"(?im)^\s*-?\s*name:\s*(AWS_SECRET|AWS_ACCESS|.*PASSWORD)", text)


def test_dockerfile_is_non_root_without_secrets_and_serves_grpc() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    body = "\n".join(lines)
    assert re.search(r"(?m)^FROM python:3\.11-slim\b", body)
    assert re.search(r"(?m)^USER (?!root|0\b)\S+", body)
    # torch is installed from its pin in pyproject.toml, from a swappable wheel index.
    assert "grep -o 'torch==[0-9.]*' pyproject.toml" in body and "TORCH_INDEX_URL" in body
    assert not re.search(r"(?im)^(ENV|ARG)\b.*(SECRET|PASSWORD|TOKEN|AWS_ACCESS)", body)
    # CMD, not ENTRYPOINT: run and step pods pass their own `dagster api ...` arguments.
    assert "ENTRYPOINT" not in body
    assert re.search(
        r'(?m)^CMD \["dagster", "api", "grpc", "--module-name", "vq_assets\.definitions"', body
    )

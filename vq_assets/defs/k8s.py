"""What each step's Kubernetes pod asks for: the `dagster-k8s/config` op tags, and the executor.

Under `dagster_k8s.k8s_job_executor` every step runs as its own Kubernetes Job, built by
`dagster_k8s.job.construct_dagster_k8s_job` from the step's `dagster-k8s/config` tag:
`container_config.resources` becomes the container's requests and limits, `pod_spec_config`
is merged into the pod spec (node selector, tolerations). Locally (the in-process and
multiprocess executors) the tags are inert. The executor's run config `per_step_k8s_config`
(keyed by op name) overrides any of this per cluster without a code change; see
`deploy/helm/values.yaml`.

GPU steps (`video_embeddings`, `quality_model`, `model_evaluation`, `quality_sweep`) ask for
one NVIDIA GPU and are scheduled only on GPU nodes: the node selector is the label NVIDIA's GPU
feature discovery (GPU operator) puts on every GPU node, and the toleration accepts the
`nvidia.com/gpu` taint GPU node pools carry (GKE adds it itself; on EKS/AKS taint the pool so
that CPU steps stay off).

Memory requests of the DuckDB steps are sized from bench/RESULTS.md ("labels"): on a day of
12,500 videos and ~2.7 M events (21.5 M events over a creation day's 8 event days), a DuckDB
worker peaked at 300-345 MiB RSS, i.e. 145-185 MiB of working set above an idle 159 MiB
interpreter. A step pod also imports the whole code location (dagster, torch, mlflow): 550 MiB
RSS measured with `/usr/bin/time -v python -c "from vq_assets.definitions import
build_definitions; build_definitions()"`. So request = 550 MiB base + working set at 10x the
bench's volume (headroom for growth), rounded up; the limit is 2x the request, and
VQ_DUCKDB_MEMORY_LIMIT (values.yaml: 1GB) keeps DuckDB below every limit: past it DuckDB spills
to VQ_DUCKDB_TEMP_DIR instead of being OOM-killed.
"""

from __future__ import annotations

import os
from typing import Any

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"
# The label NVIDIA GPU feature discovery sets on GPU nodes, and the taint GPU pools carry.
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
]


def k8s_tags(
    *,
    cpu: str,
    memory: str,
    memory_limit: str,
    gpus: int = 0,
) -> dict[str, dict[str, Any]]:
    """The `dagster-k8s/config` op tag for a step pod: requests, limits and, with GPUs, the
    GPU node selector and toleration."""
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {"memory": memory_limit}
    config: dict[str, Any] = {}
    if gpus:
        # Extended resources are requested through limits (requests must equal them).
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(gpus)
        config["pod_spec_config"] = {
            "node_selector": dict(GPU_NODE_SELECTOR),
            "tolerations": [dict(t) for t in GPU_TOLERATIONS],
        }
    config["container_config"] = {"resources": {"requests": requests, "limits": limits}}
    return {K8S_CONFIG_TAG: config}


# GPU steps. video_embeddings: the encoder in GPU memory, `EncoderResource.decode_workers`
# (2) decode processes plus the main one, the day's decoded frames in flight. quality_model and
# model_evaluation: the week's training set (TRAINING_DAYS of embeddings, ~2 KiB of vectors per
# video at BLIP's 256+256 dims: 12,500 videos x 35 days ~ 0.9 GiB) in host memory, plus the
# LightGBM baseline on CPU in model_evaluation.
K8S_GPU_TAGS = k8s_tags(cpu="4", memory="8Gi", memory_limit="16Gi", gpus=1)
K8S_EMBEDDINGS_TAGS = K8S_GPU_TAGS
K8S_TRAINING_TAGS = k8s_tags(cpu="4", memory="12Gi", memory_limit="24Gi", gpus=1)

# DuckDB steps (see the module docstring for the base and the bench's working sets).
# raw_videos: one landing day's videos validated plus every ingested video id (dedup across
#   days): small tables; 550 MiB + ~0.3 GiB.
K8S_RAW_VIDEOS_TAGS = k8s_tags(cpu="1", memory="1Gi", memory_limit="2Gi")
# watch_events: validates one event day (2.7 M events in the bench; the bare scan of 8 days
#   peaked at 303 MiB): 550 MiB + 10 x ~150 MiB.
K8S_WATCH_EVENTS_TAGS = k8s_tags(cpu="2", memory="2Gi", memory_limit="4Gi")
# video_watch_daily: one event day's partials for 8 creation days' videos (185 MiB of working
#   set in the bench): 550 MiB + 10 x 185 MiB ~ 2.4 GiB.
K8S_WATCH_DAILY_TAGS = k8s_tags(cpu="2", memory="2560Mi", memory_limit="5Gi")
# video_labels_7d: labels_from_partials over 8 partial files (0.1 s, a fraction of the
#   partials' working set).
K8S_LABELS_TAGS = k8s_tags(cpu="1", memory="1Gi", memory_limit="2Gi")
# creator_features: creator history over every closed label day (grows with history).
K8S_CREATOR_FEATURES_TAGS = k8s_tags(cpu="1", memory="1536Mi", memory_limit="3Gi")
# retrieval_prior: the content vectors of PRIOR_CORPUS_DAYS labelled days in memory (~2 KiB per
#   video at BLIP's 256+256 dims: 12,500 videos x 28 days ~ 0.7 GiB, about twice that while the
#   content matrix is built) and the exact search's 256 MiB score blocks.
K8S_RETRIEVAL_PRIOR_TAGS = k8s_tags(cpu="2", memory="4Gi", memory_limit="8Gi")
# training_set: joins TRAINING_DAYS of embeddings (~0.9 GiB of vectors, above), labels and
#   creator features into one table held in memory, written once.
K8S_TRAINING_SET_TAGS = k8s_tags(cpu="2", memory="4Gi", memory_limit="8Gi")

# How many days one backfill run of video_embeddings covers: the encoder is loaded once per run
# (a pod start, an image pull and a model load each), and a failed run re-runs at most this many.
EMBEDDINGS_PARTITIONS_PER_RUN = 7


def executor_for_deployment():
    """`k8s_job_executor` (one pod per step) when VQ_EXECUTOR=k8s, else Dagster's default
    (multiprocess, or in-process under `dg.materialize`). The Helm values set VQ_EXECUTOR=k8s on
    the code location, and K8sRunLauncher passes the code location's environment to run pods."""
    choice = os.environ.get("VQ_EXECUTOR", "default")
    if choice not in ("default", "k8s"):
        raise ValueError(f"VQ_EXECUTOR must be 'default' or 'k8s', not {choice!r}")
    if choice == "default":
        return None
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor

import os
import tempfile

import pytest

# Tests never reach for a hub or a tracking server, and keep local state out of the checkout:
# placeholder checkpoints, MLflow and DuckDB spill files go to one temp dir per session.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ["VQ_HOME"] = tempfile.mkdtemp(prefix="vq-test-home-")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("VQ_LAKE", None)
# The default image encoder (EfficientNet-Lite0, real weights) at the simulator's own 64 px on
# 4 frames: the chain tests embed thousands of videos, and 224 px would be 12x the work.
os.environ.setdefault("VQ_IMAGE_SIZE", "64")
os.environ.setdefault("VQ_FRAMES", "4")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module of tiny models: a second thread only adds sync
    cost, and on a busy 2-core box it thrashes (10x slower). Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

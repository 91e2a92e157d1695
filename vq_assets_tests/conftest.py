import os
import tempfile

# Tests never reach for a hub or a tracking server, and keep local state out of the checkout:
# placeholder checkpoints, MLflow and DuckDB spill files go to one temp dir per session.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ["VQ_HOME"] = tempfile.mkdtemp(prefix="vq-test-home-")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("VQ_LAKE", None)

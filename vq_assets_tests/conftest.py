import os

# Tests never reach for a hub or a tracking server; Dagster stays quiet.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

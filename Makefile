# Two commands matter: `make demo` and `make test`. Both set up .venv first when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)

.PHONY: setup demo test ui mlflow docs bench bench-scale lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch first (its pin lives in pyproject.toml), before anything can pull a
	# CUDA build.
	$(BIN)/python -m pip install -q "$$(grep -o '"torch==[0-9.]*"' pyproject.toml | tr -d '"')"
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/vq demo

test: setup
	$(BIN)/python -m pytest

ui: setup
	$(BIN)/vq ui

# The MLflow UI on the local store (experiment and registered model `vq-quality`).
mlflow: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.vq/mlflow/mlflow.db --host 127.0.0.1 --port 5000

# The README's pictures: the asset graph as the Chromium UI test renders it, and the skip-rate
# calibration plot of the demo's last evaluation (run `make demo` first).
FIGURES := .vq/lake/assets/model_evaluation_figures
docs: setup
	@test -d $(FIGURES) || { echo "no evaluation figures under $(FIGURES): run make demo first"; exit 1; }
	$(BIN)/python -m pytest -q vq_assets_tests/e2e
	mkdir -p docs
	cp vq_assets_tests/e2e/artifacts/asset_graph.png docs/asset_graph.png
	cp "$$(ls -d $(FIGURES)/dt=* | tail -1)/calibration_skip_rate.png" docs/calibration_skip_rate.png

bench: setup
	$(BIN)/python bench/labels.py
	$(BIN)/python bench/embeddings.py
	$(BIN)/python bench/train.py

# 1M videos and 100M events a day on this node (~20 min on 2 cores, 13 GiB peak RSS, ~37 GiB
# of temp disk); not part of `bench`. Results: bench/RESULTS.md "scale".
bench-scale: setup
	$(BIN)/python bench/scale.py

lint: setup
	$(BIN)/ruff check vq_assets vq_assets_tests bench

clean:
	rm -rf .vq

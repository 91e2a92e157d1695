# Two commands matter: `make demo` and `make test`. Both set up .venv first when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)

.PHONY: setup demo test ui bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch first (its pin lives in pyproject.toml), before anything can pull a
	# CUDA build.
	$(BIN)/python -m pip install -q "$$(grep -o 'torch==[0-9.]*' pyproject.toml)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/vq demo

test: setup
	$(BIN)/python -m pytest

ui: setup
	$(BIN)/vq ui

bench: setup
	$(BIN)/python bench/labels.py
	$(BIN)/python bench/embeddings.py
	$(BIN)/python bench/train.py

lint: setup
	$(BIN)/ruff check vq_assets vq_assets_tests bench

clean:
	rm -rf .vq

# Two entry points for a fresh machine: `make run` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test check setup data train export serve bench drift clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,serve,bench,dev]'
	touch $@

setup: $(VENV)/.installed

data/events.parquet: | setup
	$(PY) -m train simulate --users 5000 --days 90 --seed 7 --out data/events.parquet

artifacts/metrics.json: data/events.parquet
	$(PY) -m train fit --events data/events.parquet --out artifacts/ --session-col session_id --revenue-col revenue --seed 7

artifacts/model.onnx: artifacts/metrics.json
	$(PY) -m export --artifacts artifacts/

data: data/events.parquet
train: artifacts/metrics.json
export: artifacts/model.onnx

serve: export
	$(PY) -m server --model artifacts/model.onnx --host $(HOST) --port $(PORT)

run: serve  ## simulate, train, export, then serve on 127.0.0.1:8000

test: setup  ## every marker: unit, parity, http, e2e (installs chromium and wrk with apt-get when missing)
	bash scripts/system-deps
	bash scripts/test

check: setup
	bash scripts/check

bench: export
	$(PY) -m benchmarks run

clean:
	rm -rf data artifacts logs benchmarks/results .pytest_cache .mypy_cache .ruff_cache .coverage

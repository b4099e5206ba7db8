# Two entry points for a fresh machine: `make run` (the main job) and `make test` (the whole suite).
# Generated output goes to ignored folders (data/, artifacts/, benchmarks/results/); the committed examples in
# assets/ change only through `make assets`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test check setup setup-all data train export serve bench assets clean

# The main job installs what it runs (train + serve); the test suite adds the benchmark and dev tools.
$(VENV)/.installed-run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,serve]'
	touch $@

$(VENV)/.installed-all: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,serve,score,spark,bench,clients,dev]'
	touch $@ $(VENV)/.installed-run

setup: $(VENV)/.installed-run
setup-all: $(VENV)/.installed-all

data/events.parquet: | setup
	$(PY) -m train simulate --users 5000 --days 90 --seed 7 --out data/events.parquet

artifacts/metrics.json: data/events.parquet common/features.py  # a changed feature definition retrains
	$(PY) -m train fit --events data/events.parquet --out artifacts/ --session-col session_id --revenue-col revenue --seed 7

artifacts/model.onnx: artifacts/metrics.json
	$(PY) -m export --artifacts artifacts/

data: data/events.parquet
train: artifacts/metrics.json
export: artifacts/model.onnx

serve: export
	$(PY) -m server --model artifacts/model.onnx --host $(HOST) --port $(PORT)

run: serve  ## simulate, train, export, then serve on 127.0.0.1:8000

test: setup-all  ## every marker: unit, parity, http, e2e (installs chromium and wrk with apt-get when missing)
	bash scripts/system-deps
	bash scripts/test

check: setup-all
	bash scripts/check

bench: setup-all export  ## the speed report into benchmarks/results/
	$(PY) -m benchmarks run

assets: setup-all  ## refresh the committed examples in assets/: model report, drift and outcome examples, speed report
	bash scripts/assets $(PARTS)

clean:
	rm -rf data artifacts logs benchmarks/results .pytest_cache .mypy_cache .ruff_cache .coverage

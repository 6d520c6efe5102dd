# rn50-pipeline. The two commands in the README: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3.11
VENV   ?= .venv
# TensorFlow build: cpu (default) or gpu (tensorflow[and-cuda], Horovod with NCCL).
TF     ?= cpu
CACHE  ?= .cache
BIN    := $(VENV)/bin
# make stack's environment of the Airflow image (docker/airflow.Dockerfile): no TensorFlow.
AIRFLOW_VENV ?= .venv-airflow
DATA   := data/imagenet

export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup test lint demo airflow stack stack-down sample bench clean

## setup: create .venv with everything, Horovod built from source (cached in .cache/)
setup: $(VENV)/.setup-$(TF)

$(VENV)/.setup-$(TF): pyproject.toml setup.py pipeline/data/_scan.c scripts/setup.sh scripts/build_horovod.sh
	scripts/setup.sh $(PYTHON) $(VENV) $(TF) $(CACHE)
	touch $@

## test: ruff, then the whole test suite (the stack's test needs the Airflow image's environment too)
test: lint $(AIRFLOW_VENV)/.setup-none
	@rc=0; $(BIN)/python -m pytest || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests were collected"; rc=0; fi; exit $$rc

## lint: ruff, Airflow's rules still in preview on the DAG and its tasks (implicit multiple_outputs, ...), and the floors of docs/architecture.md (import-linter)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff check --preview --select AIR dags tasks
	$(BIN)/lint-imports --no-cache

## sample: regenerate the sample dataset and check it is the one data.dvc pins
sample: setup
	$(BIN)/rn50 make-sample $(DATA)
	@# `dvc commit` without --force refuses to change data.dvc, so different bytes fail here.
	$(BIN)/dvc commit --quiet data.dvc
	$(BIN)/dvc status data.dvc

## demo: the whole DAG end to end here: local S3 server, SQLite Airflow, smoke training, publish, pull back (rn50 pull, and dvc pull in a fresh clone of the registry repo)
demo: sample
	scripts/demo.sh $(VENV)

## airflow: Airflow with this project's DAGs, a local S3 server with the sample and a registry repo; UI on http://localhost:8080 (admin; it prints the password); Ctrl-C stops it all
airflow: sample
	scripts/airflow.sh $(VENV)

## stack: the production topology (compose.yaml) here, no Docker: Postgres, Redis, Celery workers, S3; Ctrl-C stops it
stack: setup sample $(AIRFLOW_VENV)/.setup-none
	VENV=$(VENV) AIRFLOW_VENV=$(AIRFLOW_VENV) scripts/stack.sh run

## stack-down: stop the stack from another terminal; nothing of it stays running
stack-down:
	scripts/stack.sh down

$(AIRFLOW_VENV)/.setup-none: pyproject.toml setup.py pipeline/data/_scan.c scripts/setup.sh | setup
	scripts/setup.sh $(PYTHON) $(AIRFLOW_VENV) none $(CACHE)
	touch $@

## bench: the benchmarks under bench/ (figures in docs/benchmarks.md)
bench: setup
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/publish.py
	$(BIN)/python bench/dag_parse.py
	$(BIN)/python bench/input.py

clean:
	rm -rf $(DATA) .pytest_cache .ruff_cache

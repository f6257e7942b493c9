# Every workflow of the project. `make demo` and `make test` are the two README commands.
# Each target creates or reuses .venv, installing exactly the versions pinned in constraints.txt.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: venv demo lint format test test-fast soak bench lock image image-test image-check compile clean help

help:  ## list the workflows
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)  ## create or update the virtual environment (.venv)

demo: $(STAMP)  ## the main job: the whole pipeline, locally, on the embedded synthetic data
	$(PY) -m pipelines demo

lint: $(STAMP)  ## ruff: lint rules of pyproject.toml (make test runs it first)
	$(VENV)/bin/ruff check .

format: $(STAMP)  ## ruff: fix what it can fix by itself (imports, upgrades)
	$(VENV)/bin/ruff check --fix .

test: lint  ## lint, then the whole test suite (what CI runs)
	$(PY) -m pytest -n 2 --dist loadfile

test-fast: $(STAMP)  ## tests not marked slow
	$(PY) -m pytest -m "not slow and not soak"

soak: $(STAMP)  ## fault-injection soak: many SIGKILLs per stage (DEEPFACE_SOAK_KILLS, DEEPFACE_SOAK_SEED)
	$(PY) -m pytest tests/faults/test_faults.py -m soak -rP

bench: $(STAMP)  ## every benchmark in benchmarks/ (minutes; prints ratios side by side)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

lock:  ## re-resolve and pin every dependency into constraints.txt (needs the package registry)
	rm -rf /tmp/deepface-lock && $(PYTHON) -m venv /tmp/deepface-lock
	/tmp/deepface-lock/bin/pip install --quiet -e '.[dev]'
	( sed -n '1,2p' constraints.txt; /tmp/deepface-lock/bin/pip freeze --all --exclude-editable | grep -v '^pip==' ) > constraints.txt.new
	mv constraints.txt.new constraints.txt

compile: $(STAMP)  ## write the pipeline template deepface-pipeline.yaml (KFP v2 / Vertex AI)
	$(PY) -m pipelines compile --output deepface-pipeline.yaml

image:  ## build the project image with buildah (tag VERSION-gGITSHA[-gpu|-tpu]; FLAVOUR=cpu|gpu|tpu); prints its reference
	docker/build.sh --no-test

image-test:  ## build the image (FLAVOUR=cpu|gpu|tpu) and smoke-test it inside (deepface --help, kfp imports, a tiny model)
	docker/build.sh

image-check: $(STAMP)  ## the image's tests (tests/integration/test_image.py): root and the network; not in make test
	DEEPFACE_IMAGE_TESTS=1 $(PY) -m pytest tests/integration/test_image.py -rs

clean:  ## remove build outputs (keeps .venv)
	rm -rf build dist *.egg-info out runs local_outputs

# `make quickstart` and `make test` each set themselves up (.venv, torch, mmrl[dev], system packages) and then run.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.mmrl-setup

.PHONY: setup quickstart test test-slow lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh dev,gui,sim
	touch $(STAMP)

quickstart: setup
	$(VENV)/bin/mmrl train configs/quickstart.yaml train.overwrite=true

test: setup
	$(VPY) -m pytest -q -m "not slow" -p no:cacheprovider

test-slow: setup
	$(VPY) -m pytest -q -m slow -p no:cacheprovider

lint: setup
	$(VPY) -m ruff check mmrl envs rewards tests scripts

clean:
	rm -rf runs .pytest_cache

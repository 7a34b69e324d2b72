VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mpa-installed
export OMP_NUM_THREADS ?= 1

.PHONY: setup demo test lint services services-down

$(STAMP): pyproject.toml scripts/setup_env.sh
	VENV=$(VENV) bash scripts/setup_env.sh
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/mpa demo --out runs/demo

test: setup
	$(BIN)/ruff check src tests components pipelines
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src tests components pipelines
	$(BIN)/ruff format --check src tests components pipelines

services: setup
	bash scripts/services.sh up

services-down:
	bash scripts/services.sh down

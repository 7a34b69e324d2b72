VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mpa-installed
export OMP_NUM_THREADS ?= 1

.PHONY: setup demo test lint services services-down images-setup image-base image-cpu

$(STAMP): pyproject.toml scripts/setup_env.sh
	VENV=$(VENV) bash scripts/setup_env.sh
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/mpa demo --out runs/demo

# The in-image tests (tests/images) run the CPU image built here: `make test` builds or refreshes it
# (podman's layer cache keeps a warm rebuild short) and installs podman/runc/debootstrap when missing.
test: setup image-cpu
	$(BIN)/ruff check src tests components pipelines
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src tests components pipelines
	$(BIN)/ruff format --check src tests components pipelines

# Container images without a registry or Docker engine: podman + runc, a debootstrap base (images/README.md).
images-setup:
	bash scripts/images.sh setup

image-base:
	bash scripts/images.sh base

image-cpu:
	bash scripts/images.sh cpu

services: setup
	bash scripts/services.sh up

services-down:
	bash scripts/services.sh down

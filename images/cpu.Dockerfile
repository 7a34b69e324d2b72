# syntax=docker/dockerfile:1.7
# Slim CPU image: mpa with CPU PyTorch, kfp, MLflow (+ PostgreSQL driver) and boto3. Runs the
# prepare, merge, gate and register pipeline steps, the MLflow server and the bucket Job; on a
# dev cluster without GPUs (pipelines/settings/cpu-dev.yaml) every step, with tiny models.
#
# Build: skaffold build   (or: docker build -f images/cpu.Dockerfile .)
# Without a reachable registry: `make image-cpu` (scripts/images.sh: a debootstrap base passed as
# BASE_IMAGE, podman, the host's pip setup mounted). See images/README.md.
#
# BASE_IMAGE: any Debian bookworm with python3 (>= 3.11), python3-venv and ca-certificates; the
# build and the final stage must use the same one (the venv links to its /usr/bin/python3).
ARG BASE_IMAGE=python:3.11.10-slim-bookworm

# The dependency list alone (pyproject.toml's dependencies and the extras the image needs): the
# build stage copies this file, so an edit elsewhere in pyproject.toml keeps the cached install.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml constraints.txt /src/
RUN python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + [d for e in ('train', 'pipeline', 'tracking') for d in p['optional-dependencies'][e]]))" \
      > /requirements.txt \
 && cp /src/constraints.txt /constraints.txt

# One stage: every dependency installs from a wheel (no compiler in the base, none needed), and a
# second stage copying the 2 GB virtualenv would make even a fully cached rebuild hash it.
FROM ${BASE_IMAGE}
# A fixed non-root UID in group 0 (root group, no root rights): the home and the model-cache
# mount point are group-0 writable (g+rwX, setgid dirs), so the image also runs under an
# arbitrary UID with GID 0 (OpenShift) and needs no fsGroup (which KFP cannot set).
RUN useradd --uid 10001 --gid 0 --no-user-group --create-home --home-dir /home/mpa \
      --shell /usr/sbin/nologin mpa \
 && mkdir -p /cache /home/mpa/.cache \
 && chown -R 10001:0 /cache /home/mpa \
 && chmod -R g+rwX /cache /home/mpa \
 && find /cache /home/mpa -type d -exec chmod g+s {} +
# Where the CPU torch/torchvision wheels come from; empty: only the default index and any
# find-links folder the build is given (PIP_FIND_LINKS).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The host's pip setup, for builds behind a TLS-re-signing proxy or with local wheel folders
# (scripts/images.sh sets them to read-only mounts); build arguments only, not in the image's ENV.
ARG PIP_CERT
ARG PIP_FIND_LINKS
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /tmp/mpa-src
# The +cpu build pinned exactly (PyPI's default torch is a CUDA build); torchvision without its
# dependencies so pip cannot swap torch for a CUDA build (mpa._torchvision_compat covers its ops).
RUN pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "torch==2.13.0+cpu" \
 && pip install --no-deps ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "torchvision==0.28.0"
# Dependencies first, so that a change under src/ rebuilds only the last, small layers.
COPY --from=requirements /requirements.txt /constraints.txt /tmp/
RUN pip install -r /tmp/requirements.txt -c /tmp/constraints.txt "torch==2.13.0+cpu" "transformers==5.19.0" \
      "psycopg2-binary==2.9.10"
COPY pyproject.toml README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-deps ".[train,pipeline,tracking]" \
 && pip check \
 && SITE=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && echo "import mpa._torchvision_compat as _m; _m.install()" > "$SITE/mpa_torchvision_compat.pth" \
 && python3 -c "import mpa, mpa_kfp, kfp, mlflow, flask_wtf, torch, torchvision, psycopg2, transformers; print('mpa', mpa.__version__, 'torch', torch.__version__, 'kfp', kfp.__version__)" \
 && cd / && rm -rf /tmp/mpa-src /tmp/requirements.txt /tmp/constraints.txt
ENV HOME=/home/mpa \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/cache/huggingface \
    MPA_CACHE=/cache/mpa \
    TOKENIZERS_PARALLELISM=false \
    OMP_NUM_THREADS=1
WORKDIR /home/mpa
USER 10001:0
CMD ["mpa", "--help"]

# syntax=docker/dockerfile:1.7
# GPU runtime: CUDA PyTorch + vLLM + mpa. Runs PA, PI, PL and evaluate pipeline steps (the KFP
# components import mpa inside their bodies: kfp is installed here, nothing is installed at run
# time) and the shared vLLM teacher server (manifests/components/teacher-vllm).
#
# Build: skaffold build -p gpu   (or: docker build -f images/gpu.Dockerfile .)
# Not built on the project's own machines (no CUDA there): tests/test_skaffold.py checks this file
# statically. See images/README.md.
#
# BASE_IMAGE: an Ubuntu/Debian CUDA runtime image; the build and the final stage use the same one.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${BASE_IMAGE} AS build
# Versions move together: vLLM pins its torch; torch 2.13.0 is what vLLM 0.32.0 is built against
# (its CPU build's metadata pins torch==2.13.0) and transformers 5.19.0 lies in its range.
ARG VLLM_VERSION=0.32.0
ARG TORCH_VERSION=2.13.0
ARG TRANSFORMERS_VERSION=5.19.0
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# vLLM first: it pins the CUDA torch build the rest must share.
RUN pip install "vllm==${VLLM_VERSION}" "torch==${TORCH_VERSION}" "transformers==${TRANSFORMERS_VERSION}"
COPY pyproject.toml README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN pip install ".[train,pipeline,tracking]" "vllm==${VLLM_VERSION}" "torch==${TORCH_VERSION}" \
      "transformers==${TRANSFORMERS_VERSION}" \
 && python3 -c "import mpa, kfp, vllm, torch; print('mpa', mpa.__version__, 'vllm', vllm.__version__, 'torch', torch.__version__)"

FROM ${BASE_IMAGE}
# Triton (inside vLLM and torch.compile) compiles kernels when the server starts: it needs a C
# compiler and the Python headers at run time, in this final stage.
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-dev gcc libc6-dev ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --gid 0 --no-user-group --create-home --home-dir /home/mpa --shell /usr/sbin/nologin mpa \
 && mkdir -p /cache /home/mpa/.cache /home/mpa/.triton \
 && chown -R 10001:0 /cache /home/mpa \
 && chmod -R g+rwX /cache /home/mpa \
 && find /cache /home/mpa -type d -exec chmod g+s {} +
COPY --from=build /opt/venv /opt/venv
# Same non-root user and group-0 writable home / model cache as the CPU image (works without
# fsGroup and under an arbitrary UID in group 0); Triton's kernel cache lives in the home.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/mpa \
    CC=gcc \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    MPA_CACHE=/cache/mpa \
    TRITON_CACHE_DIR=/home/mpa/.triton \
    TOKENIZERS_PARALLELISM=false
WORKDIR /home/mpa
USER 10001:0
CMD ["mpa", "--help"]

# syntax=docker/dockerfile:1.7
# GPU runtime: CUDA PyTorch + vLLM + mpa. Runs PA, PI, PL and evaluate pipeline steps (the KFP
# components import mpa inside their bodies: kfp is installed here, nothing is installed at run
# time) and the shared vLLM teacher server (manifests/components/teacher-vllm).
# Build: skaffold build -p gpu   (or docker build -f images/gpu.Dockerfile .)
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ARG VLLM_VERSION=0.32.0
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# vLLM first: it pins the CUDA torch build the rest must share.
RUN pip install "vllm==${VLLM_VERSION}" "transformers==5.19.0"
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[train,pipeline,tracking]" "transformers==5.19.0" \
 && python -c "import mpa, kfp, vllm, torch; print('mpa', mpa.__version__, 'torch', torch.__version__)"

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin mpa \
 && mkdir -p /cache && chown 10001:10001 /cache
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    TOKENIZERS_PARALLELISM=false
WORKDIR /home/mpa
USER 10001:10001
CMD ["mpa", "--help"]

# syntax=docker/dockerfile:1.7
# Slim CPU image: mpa with CPU PyTorch, kfp, MLflow (+ PostgreSQL driver) and boto3. Runs the
# prepare, merge, gate and register pipeline steps, the MLflow server and the bucket Job; on a
# dev cluster without GPUs (pipelines/settings/cpu-dev.yaml) every step, with tiny models.
# Build: skaffold build   (or docker build -f images/cpu.Dockerfile .)
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# CPU wheels of torch/torchvision from the PyTorch index (PyPI's default torch is a CUDA build).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" "torchvision==0.28.0"
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[train,pipeline,tracking]" "transformers==5.19.0" "psycopg2-binary==2.9.10" \
 && python -c "import mpa, kfp, mlflow, flask_wtf, torch, torchvision, psycopg2; print('mpa', mpa.__version__, torch.__version__)"

FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin mpa \
 && mkdir -p /cache && chown 10001:10001 /cache
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    TOKENIZERS_PARALLELISM=false \
    OMP_NUM_THREADS=1
WORKDIR /home/mpa
USER 10001:10001
CMD ["mpa", "--help"]

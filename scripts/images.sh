#!/usr/bin/env bash
# Build the mpa container images with podman, without any container registry.
#
#   bash scripts/images.sh setup   # install podman, runc, debootstrap (apt-get, as root) when missing
#   bash scripts/images.sh base    # localhost/mpa-base:bookworm from debootstrap (kept once built)
#   bash scripts/images.sh cpu     # localhost/mpa-cpu:dev from images/cpu.Dockerfile on that base
#   bash scripts/images.sh run ARGS...   # podman run with the flags that work here (tests use this)
#
# Why no `FROM python:...` pull: where no registry is reachable the base is made locally with
# debootstrap (Debian bookworm, minbase + python3, python3-venv, ca-certificates) and imported;
# the Dockerfiles take it as the BASE_IMAGE build argument.
# Why runc and the ulimits: on hosts whose container runtime defaults (crun, inherited rlimits)
# fail, `--runtime runc --ulimit nofile=20000:20000 --ulimit nproc=4096:4096` works as root.
# pip inside the build uses the host network and the host's pip setup: its CA bundle and its
# local wheel folders (find-links; read from `pip config list` and PIP_* variables) are
# mounted read-only, so a proxy that re-signs TLS or a local torch wheel work the same inside.
#
# Environment: PODMAN (default podman), BASE_IMAGE (default localhost/mpa-base:bookworm),
# CPU_IMAGE (default localhost/mpa-cpu:dev), DEBIAN_MIRROR (default: debootstrap's own).
set -euo pipefail
cd "$(dirname "$0")/.."

PODMAN=${PODMAN:-podman}
BASE_IMAGE=${BASE_IMAGE:-localhost/mpa-base:bookworm}
CPU_IMAGE=${CPU_IMAGE:-localhost/mpa-cpu:dev}
SUITE=bookworm
RUNTIME_FLAGS=(--runtime runc)
LIMIT_FLAGS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)

log() { printf '[images] %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: $1 needs root (podman as root with runc; debootstrap)" >&2
    exit 2
  fi
}

cmd_setup() {
  local missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  need_root "installing ${missing[*]}"
  log "installing ${missing[*]} (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # with Debian's recommended packages (container networking plugins, ...): the set measured to work
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
}

cmd_base() {
  cmd_setup
  if "$PODMAN" image exists "$BASE_IMAGE"; then
    log "$BASE_IMAGE present (podman rmi it to rebuild)"
    return 0
  fi
  need_root "debootstrap"
  local dir
  dir=$(mktemp -d /var/tmp/mpa-base.XXXXXX)
  trap 'rm -rf "$dir"' EXIT
  log "debootstrap $SUITE -> $BASE_IMAGE (about a minute)"
  # shellcheck disable=SC2086
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$dir" ${DEBIAN_MIRROR:-} >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; exit 1; }
  rm -f "$dir.log"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | "$PODMAN" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$BASE_IMAGE" >/dev/null
  rm -rf "$dir"
  trap - EXIT
  log "built $BASE_IMAGE"
}

# The host's pip configuration, as "key=value" lines (pip config list), plus PIP_* variables.
pip_setting() {
  local key=$1 env=$2 value=${!2:-}
  if [ -z "$value" ]; then
    value=$(python3 -m pip config list 2>/dev/null | sed -n "s/^[a-z:]*\.${key}='\(.*\)'$/\1/p" | head -1 || true)
  fi
  printf '%s' "$value"
}

# Mount flags and build args that hand the host's pip setup to the build (read-only).
PIP_MOUNTS=()
PIP_ARGS=()
collect_pip_setup() {
  local cert links dirs=() n=0 d
  cert=$(pip_setting cert PIP_CERT)
  if [ -n "$cert" ] && [ -f "$cert" ]; then
    PIP_MOUNTS+=(-v "$cert:/run/pip/ca.crt:ro")
    PIP_ARGS+=(--build-arg PIP_CERT=/run/pip/ca.crt)
  fi
  links=$(pip_setting find-links PIP_FIND_LINKS)
  for d in $links; do
    d=${d#file://}
    if [ -d "$d" ]; then
      PIP_MOUNTS+=(-v "$d:/run/pip/links$n:ro")
      dirs+=("/run/pip/links$n")
      n=$((n + 1))
    fi
  done
  [ ${#dirs[@]} -eq 0 ] || PIP_ARGS+=(--build-arg "PIP_FIND_LINKS=${dirs[*]}")
  return 0
}

# sha256 over `sha256sum` lines of the files the Dockerfile copies (as .dockerignore lets them
# through), stamped on the image: tests/images/kfp_launch.py:source_digest computes the same to
# refuse testing an image built from other sources.
source_digest() {
  find pyproject.toml constraints.txt README.md src components pipelines -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
    ! -path 'src/*.egg-info/*' \
    ! -path 'components/tests/*' ! -path 'components/*/tests/*' ! -path 'pipelines/tests/*' ! -path 'pipelines/*/tests/*' \
    -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

cmd_cpu() {
  cmd_base
  collect_pip_setup
  # The CPU torch wheel: from a local wheel folder when the host has one that holds it, else
  # from the PyTorch CPU index (the Dockerfile's default).
  local torch_index=() d
  for d in $(pip_setting find-links PIP_FIND_LINKS); do
    if compgen -G "${d#file://}/torch-2.13.0+cpu-*.whl" >/dev/null; then
      torch_index=(--build-arg TORCH_INDEX_URL=)
    fi
  done
  log "building $CPU_IMAGE from images/cpu.Dockerfile on $BASE_IMAGE"
  local start=$SECONDS
  "$PODMAN" "${RUNTIME_FLAGS[@]}" build \
    "${LIMIT_FLAGS[@]}" --network host \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" "${torch_index[@]}" \
    "${PIP_ARGS[@]}" "${PIP_MOUNTS[@]}" \
    --label "io.mpa.source-digest=$(source_digest)" \
    -f images/cpu.Dockerfile -t "$CPU_IMAGE" .
  log "built $CPU_IMAGE in $((SECONDS - start)) s"
  # earlier builds of this image, now untagged (only ours: they carry the source-digest label)
  "$PODMAN" image prune -f --filter label=io.mpa.source-digest >/dev/null
}

cmd_run() {
  exec "$PODMAN" "${RUNTIME_FLAGS[@]}" run "${LIMIT_FLAGS[@]}" "$@"
}

case "${1:-}" in
  setup) cmd_setup ;;
  base) cmd_base ;;
  cpu) cmd_cpu ;;
  run) shift; cmd_run "$@" ;;
  *)
    echo "usage: $0 setup|base|cpu|run ARGS..." >&2
    exit 2
    ;;
esac

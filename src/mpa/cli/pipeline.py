"""``mpa pipeline compile | upload | run | wait``: the Kubeflow side of the CLI (see docs/kubeflow.md).

The pipeline itself lives in ``pipelines/training/mpa/`` (installed: ``mpa_kfp.pipelines.training.mpa``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="pipeline",
    help=(
        "Kubeflow Pipelines: compile the MPA pipeline, upload a version named after the git revision and the "
        "compiled spec, run it with the same run config `mpa run -c` takes, follow it."
    ),
    no_args_is_help=True,
)

SettingsOpt = Annotated[
    Path | None,
    typer.Option("--settings", help="compile-time settings YAML (images, GPUs, memory, secrets, cache PVC)"),
]
GpuImageOpt = Annotated[
    str | None, typer.Option("--gpu-image", help="image for PA/PI/PL/evaluate (overrides settings)")
]
CpuImageOpt = Annotated[str | None, typer.Option("--cpu-image", help="image for prepare/merge/gate/register")]
ImagesFromOpt = Annotated[
    Path | None,
    typer.Option("--images-from", help="both images from `skaffold build --file-output` JSON (flags above win)"),
]
HostOpt = Annotated[
    str | None, typer.Option("--host", help="KFP API endpoint [env: KF_PIPELINES_ENDPOINT, KFP_ENDPOINT]")
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        "-n",
        help="where runs live: kubeflow (standalone KFP, the default) or your Profile namespace (multi-user "
        "Kubeflow) [env: KFP_NAMESPACE]",
    ),
]
TokenOpt = Annotated[str | None, typer.Option("--token", help="bearer token [env: KFP_EXISTING_TOKEN]")]
PackageOpt = Annotated[
    Path | None, typer.Option("--package", help="a compiled pipeline YAML (default: compile now into a temp file)")
]
NameOpt = Annotated[str, typer.Option("--pipeline-name", help="pipeline name on the server")]
VersionOpt = Annotated[
    str | None, typer.Option("--version-name", help="default: git-<sha>-<spec digest> (see docs/kubeflow.md)")
]
DEFAULT_COMPILED = Path("pipeline.yaml")  # in the current directory (the committed spec is rewritten only when named)


def _pairs(pairs: list[str] | None, flag: str) -> dict:
    """``name=value`` pairs, values parsed as YAML (``epochs=2`` is a number), as ``--set`` parses them."""
    from mpa.config import ConfigError, parse_set_pairs

    try:
        return parse_set_pairs(pairs)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc).replace("--set ", f"{flag} "), param_hint=flag) from None


def _settings(path: Path | None, gpu_image: str | None, cpu_image: str | None, images_from: Path | None = None):
    from mpa.orchestrate.kubeflow.settings import images_from_build, load_settings

    images = images_from_build(images_from) if images_from else {}
    images.update({k: v for k, v in {"gpu_image": gpu_image, "cpu_image": cpu_image}.items() if v})
    # through the merge, so the per-run teacher server's image follows --gpu-image as it follows gpu_image
    return load_settings(path, images)


def _package(package: Path | None, settings: Path | None, gpu_image: str | None, cpu_image: str | None) -> Path:
    from mpa_kfp.pipelines.training.mpa.pipeline import compile_pipeline

    if package is not None:
        if not package.is_file():
            raise typer.BadParameter(f"compiled pipeline not found: {package}", param_hint="--package")
        if settings or gpu_image or cpu_image:
            raise typer.BadParameter("give either --package or compile options, not both", param_hint="--package")
        return package
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="mpa-pipeline-")) / "mpa.yaml"
    return compile_pipeline(out, _settings(settings, gpu_image, cpu_image))


def _client(host: str | None, namespace: str | None, token: str | None):
    """A KFP client for a host that answers: no endpoint (outside a cluster) or one that does not answer is a
    one-line error naming the setting, never a client silently aimed at localhost:80."""
    import os

    from mpa.cli.common import UserError
    from mpa.orchestrate.kubeflow.client import make_client, resolve_connection

    conn = resolve_connection(host, namespace, token)
    if conn.host is None and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise UserError("no Kubeflow Pipelines endpoint: pass --host URL or set KF_PIPELINES_ENDPOINT (e.g. "
                        "http://localhost:8080 after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`)")
    if conn.host is not None:
        _check_host(conn.host)
    with kfp_errors(conn.host):
        return conn, make_client(conn)


def _check_host(host: str, timeout_s: float = 10.0) -> None:
    import urllib.error
    import urllib.request

    from mpa.cli.common import UserError
    from mpa.redact import redact_text

    if not host.startswith(("http://", "https://")):
        raise UserError(f"--host / KF_PIPELINES_ENDPOINT {redact_text(host)!r} is not an http(s):// URL")
    try:
        urllib.request.urlopen(host.rstrip("/") + "/apis/v2beta1/healthz", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # it answers (an auth proxy may refuse the health path; the client reports what it must)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"the Kubeflow Pipelines endpoint {redact_text(host)} (--host / KF_PIPELINES_ENDPOINT) "
                        f"cannot be reached ({reason}); check the URL or the port-forward") from None


class kfp_errors:  # noqa: N801 - used as a context manager
    """Errors of the KFP client (HTTP, connection, API) as one line naming the endpoint, not a traceback."""

    def __init__(self, host: str | None) -> None:
        self.host = host

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, typer.Exit | typer.BadParameter):
            return False
        from mpa.cli.common import UserError
        from mpa.errors import MpaError, one_line
        from mpa.redact import redact_text

        if isinstance(exc, MpaError):
            return False
        module = type(exc).__module__.split(".")[0]
        ours = module in ("kfp", "kfp_server_api", "urllib3", "requests", "kubernetes", "http", "socket")
        if not ours and not isinstance(exc, ConnectionError | TimeoutError):
            return False
        status = getattr(exc, "status", None)
        reason = getattr(exc, "reason", None) or str(exc)
        where = redact_text(self.host or "the in-cluster endpoint")
        detail = one_line(redact_text(f"{status} {reason}" if status else str(reason)), 200)
        raise UserError(f"Kubeflow Pipelines at {where}: {type(exc).__name__}: {detail}") from None


def _upload(package: Path, name: str, version: str | None, host, namespace, token):
    from mpa.orchestrate.kubeflow.client import upload_version, version_name
    from mpa.provenance import git_revision

    conn, client = _client(host, namespace, token)
    version = version or version_name(package, git_revision(Path.cwd()))
    with kfp_errors(conn.host):
        uploaded = upload_version(client, package, name, version, description=f"mpa {version}")
    return conn, client, uploaded


@app.command("compile")
def compile_cmd(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="where to write the compiled YAML (default: ./pipeline.yaml)")
    ] = DEFAULT_COMPILED,
    settings: SettingsOpt = None,
    gpu_image: GpuImageOpt = None,
    cpu_image: CpuImageOpt = None,
    images_from: ImagesFromOpt = None,
) -> None:
    """Compile the pipeline to KFP IR YAML (resources, images, secrets, time limits from --settings)."""
    from mpa.orchestrate.kubeflow.client import spec_digest
    from mpa_kfp.pipelines.training.mpa.pipeline import compile_pipeline

    s = _settings(settings, gpu_image, cpu_image, images_from)
    path = compile_pipeline(out, s)
    typer.echo(json.dumps({"compiled": str(path), "digest": spec_digest(path), "gpu_image": s.gpu_image,
                           "cpu_image": s.cpu_image}))


@app.command("upload")
def upload_cmd(
    package: PackageOpt = None,
    pipeline_name: NameOpt = "mpa",
    version_name: VersionOpt = None,
    settings: SettingsOpt = None,
    gpu_image: GpuImageOpt = None,
    cpu_image: CpuImageOpt = None,
    host: HostOpt = None,
    namespace: NamespaceOpt = None,
    token: TokenOpt = None,
) -> None:
    """Upload a pipeline version named after the git revision and the spec (a no-op if it is already there)."""
    pkg = _package(package, settings, gpu_image, cpu_image)
    _, _, up = _upload(pkg, pipeline_name, version_name, host, namespace, token)
    typer.echo(
        json.dumps(
            {
                "pipeline_id": up.pipeline_id,
                "version_id": up.version_id,
                "version": up.version_name,
                "created": up.created,
            }
        )
    )


@app.command("run")
def run_cmd(
    params: Annotated[
        Path | None,
        typer.Option("--config", "-c", "--params", "-p",
                     help="the run config YAML, the same file `mpa run -c` takes (--params: the old name)"),
    ] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="override a config value, dotted: --set train.lora=true")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="a run parameter of the pipeline, name=value: --param train_epochs=2"),
    ] = None,
    shards: Annotated[
        int | None, typer.Option(help="PA/PI shard pods (default: the pipeline's, 4)", envvar="MPA_SHARDS")
    ] = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment")] = "mpa",
    run_name: Annotated[str | None, typer.Option("--run-name", help="default: mpa-<version>-<time>")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the run; exit 1 unless it succeeds")] = False,
    timeout: Annotated[int, typer.Option(help="--wait gives up after this many seconds (exit 1)")] = 24 * 3600,
    cache: Annotated[
        bool | None,
        typer.Option("--cache/--no-cache", help="--no-cache: every task runs again (default: as compiled)"),
    ] = None,
    service_account: Annotated[str | None, typer.Option(help="run pods as this ServiceAccount")] = None,
    package: PackageOpt = None,
    pipeline_name: NameOpt = "mpa",
    version_name: VersionOpt = None,
    settings: SettingsOpt = None,
    gpu_image: GpuImageOpt = None,
    cpu_image: CpuImageOpt = None,
    host: HostOpt = None,
    namespace: NamespaceOpt = None,
    token: TokenOpt = None,
) -> None:
    """Upload (idempotent) and start a run in an experiment with a run config, as `mpa run -c` would."""
    from mpa.orchestrate.kubeflow.client import run_arguments, start_run

    pkg = _package(package, settings, gpu_image, cpu_image)
    args = run_arguments(pkg, params, _pairs(sets, "--set"), _pairs(param, "--param"), shards)
    conn, client, up = _upload(pkg, pipeline_name, version_name, host, namespace, token)
    # the client already scopes to --namespace (multi-user KFP); None lets it use that
    with kfp_errors(conn.host):
        run_id = start_run(client, experiment, up, args, package=pkg, namespace=None, name=run_name,
                           enable_caching=cache, service_account=service_account)
    typer.echo(json.dumps({"run_id": run_id, "version": up.version_name, "experiment": experiment}))
    if wait:
        with kfp_errors(conn.host):
            _follow(client, run_id, timeout)


@app.command("wait")
def wait_cmd(
    run_id: Annotated[str, typer.Argument(help="the run id `mpa pipeline run` printed")],
    timeout: Annotated[int, typer.Option(help="give up after this many seconds (exit 1)")] = 24 * 3600,
    host: HostOpt = None,
    namespace: NamespaceOpt = None,
    token: TokenOpt = None,
) -> None:
    """Follow a run until it finishes; exit 1 unless it succeeds (e.g. again after a token expired)."""
    conn, client = _client(host, namespace, token)
    with kfp_errors(conn.host):
        _follow(client, run_id, timeout)


@app.command("stop")
def stop_cmd(
    run_id: Annotated[str, typer.Argument(help="the run id `mpa pipeline run` printed")],
    host: HostOpt = None,
    namespace: NamespaceOpt = None,
    token: TokenOpt = None,
) -> None:
    """Terminate a run (its running pods are stopped); a run that has already finished is left as it is."""
    from mpa.orchestrate.kubeflow.client import stop

    conn, client = _client(host, namespace, token)
    with kfp_errors(conn.host):
        state = stop(client, run_id)
    typer.echo(json.dumps({"run_id": run_id, "state": state}))


def _follow(client, run_id: str, timeout: int) -> None:
    from mpa.orchestrate.kubeflow.client import run_succeeded
    from mpa.orchestrate.kubeflow.client import wait as wait_for

    try:
        state = wait_for(client, run_id, timeout)
    except TimeoutError:
        typer.echo(json.dumps({"run_id": run_id, "state": "timeout"}))
        raise typer.Exit(1) from None
    typer.echo(json.dumps({"run_id": run_id, "state": state}))
    if not run_succeeded(state):
        raise typer.Exit(1)


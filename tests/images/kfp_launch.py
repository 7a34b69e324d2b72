"""Run one component of the compiled pipeline inside a container image the way the KFP v2
launcher does, with podman instead of a Kubernetes pod.

What is the same as on a cluster: the image (the one `make image-cpu` built), the user it runs as
(the image's non-root USER), the container command and arguments taken verbatim from the compiled
spec's executor (``sh -ec <program> <component source> --executor_input {{$}} --function_to_execute
<name>``), the executor input JSON (built with ``kfp.local``'s own helper from the compiled
component spec, as the driver builds it), artifact URIs of the form ``s3://<bucket>/...`` that the
KFP executor maps to ``/s3/<bucket>/...`` (a writable scratch mount, as the driver gives non-root
images), the output-parameter and executor-output files under ``/tmp``.

What differs (only a cluster shows it): the launcher's own download/upload of artifacts between
the object store and ``/s3`` (here the host directory *is* ``/s3``), the driver's input resolution
across tasks (the tests pass the upstream outputs explicitly), resources, secrets and config maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
# The compiled pipeline: the KEP-913 layout's place first, the older one second.
SPEC_PATHS = (ROOT / "pipelines" / "training" / "mpa" / "pipeline.yaml", ROOT / "pipelines" / "compiled" / "mpa.yaml")
CPU_IMAGE = os.environ.get("MPA_CPU_IMAGE", "localhost/mpa-cpu:dev")
BUCKET = "mpa-pipelines"
OUTPUT_PARAMS_DIR = "/tmp/kfp/outputs"  # where the launcher asks for output parameter files
EXECUTOR_OUTPUT = "/tmp/kfp_outputs/output_metadata.json"  # the executor's own output file
SOURCE_LABEL = "io.mpa.source-digest"


def compiled_spec_path() -> Path:
    for path in SPEC_PATHS:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no compiled pipeline at any of {[str(p.relative_to(ROOT)) for p in SPEC_PATHS]}")


def load_pipeline_spec() -> dict:
    """The PipelineSpec document (the first of the file's YAML documents; the second is the platform spec)."""
    return next(yaml.safe_load_all(compiled_spec_path().read_text(encoding="utf-8")))


def image_name(ref: str) -> str:
    """``ghcr.io/org/mpa-cpu:0.1.0`` -> ``mpa-cpu``."""
    last = ref.rsplit("/", 1)[-1]
    return last.split("@", 1)[0].split(":", 1)[0]


def _typed(text: str, parameter_type: str) -> Any:
    """An output parameter's file as the launcher reads it, by the declared type."""
    if parameter_type == "NUMBER_INTEGER":
        return int(text)
    if parameter_type == "NUMBER_DOUBLE":
        return float(text)
    if parameter_type == "BOOLEAN":
        return text.strip().lower() == "true"
    if parameter_type in ("LIST", "STRUCT"):
        return json.loads(text)
    return text


def components_on_image(spec: dict, name: str) -> list[str]:
    """Component names (``comp-`` stripped) whose executor runs on the image called ``name``."""
    executors = spec["deploymentSpec"]["executors"]
    out = []
    for comp, body in spec["components"].items():
        label = body.get("executorLabel")
        if label and image_name(executors[label]["container"]["image"]) == name:
            out.append(comp.removeprefix("comp-"))
    return sorted(out)


def _in_build_context(rel: Path) -> bool:
    """What .dockerignore lets through under src/, components/ and pipelines/."""
    if "__pycache__" in rel.parts or rel.suffix == ".pyc":
        return False
    if rel.parts[0] == "src" and len(rel.parts) > 1 and rel.parts[1].endswith(".egg-info"):
        return False
    return not (rel.parts[0] in ("components", "pipelines") and "tests" in rel.parts[1:-1])


def source_digest(root: Path = ROOT) -> str:
    """The digest scripts/images.sh stamps on the image (label ``io.mpa.source-digest``): sha256 over
    ``sha256sum``-style lines of every file the Dockerfile copies (pyproject.toml, constraints.txt, README.md, src/,
    components/, pipelines/) minus what .dockerignore leaves out."""
    files = [root / "pyproject.toml", root / "constraints.txt", root / "README.md"]
    for top in ("src", "components", "pipelines"):
        files += [p for p in (root / top).rglob("*") if p.is_file() and _in_build_context(p.relative_to(root))]
    lines = []
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix().encode()):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(root).as_posix()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass
class TaskResult:
    parameters: dict[str, Any]  # output parameters, typed as the component declares them
    artifacts: dict[str, list[dict]]  # output artifacts: name -> [{uri, path (on the host), metadata}]
    log: str


class Launcher:
    """Runs components of one compiled spec in one image; ``root`` (a host dir) holds ``/s3``."""

    def __init__(self, spec: dict, image: str, root: Path, run_id: str = "run-1"):
        self.spec = spec
        self.image = image
        self.root = root
        self.run_id = run_id
        self.s3 = root / "s3"
        self.s3.mkdir(parents=True, exist_ok=True)
        self.s3.chmod(0o777)  # an emptyDir, writable by any UID

    def host_path(self, uri: str) -> Path:
        assert uri.startswith("s3://"), uri
        return self.s3 / uri[len("s3://") :]

    def artifact(self, schema_title: str, uri: str, metadata: dict | None = None):
        """An input artifact for :meth:`run` (a dsl artifact object, as kfp.local passes them)."""
        from kfp import dsl

        classes = {"system.Dataset": dsl.Dataset, "system.Model": dsl.Model, "system.Metrics": dsl.Metrics}
        return classes[schema_title](name=uri.rsplit("/", 1)[-1], uri=uri, metadata=metadata or {})

    def executor_input(self, component: str, arguments: dict[str, Any], task: str) -> dict:
        from google.protobuf import json_format
        from kfp.local import executor_input_utils
        from kfp.pipeline_spec import pipeline_spec_pb2

        comp_spec = json_format.ParseDict(
            self.spec["components"][f"comp-{component}"], pipeline_spec_pb2.ComponentSpec()
        )
        declared = set(comp_spec.input_definitions.parameters) | set(comp_spec.input_definitions.artifacts)
        assert set(arguments) <= declared, f"{component}: undeclared inputs {sorted(set(arguments) - declared)}"
        missing = {
            k
            for k, v in comp_spec.input_definitions.parameters.items()
            if k not in arguments and not v.HasField("default_value") and not v.is_optional
        }
        assert not missing, f"{component}: inputs without a value {sorted(missing)}"
        task_root = f"s3://{BUCKET}/{self.run_id}/{task}"
        message = executor_input_utils.construct_executor_input(
            comp_spec, arguments, task_root=task_root, block_input_artifact=False
        )
        for name, param in message.outputs.parameters.items():
            param.output_file = f"{OUTPUT_PARAMS_DIR}/{name}"
        message.outputs.output_file = EXECUTOR_OUTPUT
        # an optional parameter nobody set is absent from the backend's executor input (kfp.local
        # fills in an empty default instead); the function's own default applies
        for name, param in comp_spec.input_definitions.parameters.items():
            if name not in arguments and not param.HasField("default_value"):
                message.inputs.parameter_values.pop(name, None)
        return executor_input_utils.executor_input_to_dict(message, comp_spec)

    def run(
        self,
        component: str,
        arguments: dict[str, Any],
        task: str | None = None,
        mounts: dict[Path, str] | None = None,
        env: dict[str, str] | None = None,
        network: str = "none",
        timeout: float = 600,
    ) -> TaskResult:
        """Run ``component`` with ``arguments`` (parameter values and input artifacts) in the image."""
        task = task or component
        container = self.spec["deploymentSpec"]["executors"][
            self.spec["components"][f"comp-{component}"]["executorLabel"]
        ]["container"]
        executor_input = self.executor_input(component, arguments, task)
        args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
        leftover = [a for a in args if "{{$" in a]
        assert not leftover, f"placeholders the launcher would resolve that this runner does not: {leftover}"

        io_dir = self.root / "io" / task
        if io_dir.exists():
            shutil.rmtree(io_dir)
        for sub in ("executor", "params"):
            (io_dir / sub).mkdir(parents=True)
            (io_dir / sub).chmod(0o777)
        volumes = [f"{self.s3}:/s3", f"{io_dir / 'executor'}:/tmp/kfp_outputs",
                   f"{io_dir / 'params'}:{OUTPUT_PARAMS_DIR}"]
        volumes += [f"{host}:{ctr}:ro" for host, ctr in (mounts or {}).items()]
        cmd = ["bash", str(ROOT / "scripts" / "images.sh"), "run", "--rm", f"--network={network}"]
        for v in volumes:
            cmd += ["-v", v]
        for key, value in (env or {}).items():
            cmd += ["-e", f"{key}={value}"]
        cmd += [self.image, *container["command"], *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{component} failed in {self.image} (exit {proc.returncode}):\n{log[-4000:]}"

        # the executor reports return values and artifact metadata in its output file; the launcher
        # reads them from there
        executor_output = json.loads((io_dir / "executor" / "output_metadata.json").read_text(encoding="utf-8"))
        declared = self.spec["components"][f"comp-{component}"].get("outputDefinitions", {}).get("parameters", {})
        params = dict(executor_output.get("parameterValues", {}))
        # an OutputPath parameter is written to its output file, which the launcher reads and types
        for name, decl in declared.items():
            path = io_dir / "params" / name
            if name not in params and path.is_file():
                params[name] = _typed(path.read_text(encoding="utf-8"), decl["parameterType"])
        assert set(params) == set(declared), (component, params, declared)
        artifacts = {}
        for name, listing in executor_input["outputs"].get("artifacts", {}).items():
            written = executor_output.get("artifacts", {}).get(name, {}).get("artifacts", [])
            out = []
            for i, art in enumerate(listing["artifacts"]):
                meta = written[i].get("metadata", {}) if i < len(written) else {}
                out.append(
                    {
                        "uri": art["uri"],
                        "path": self.host_path(art["uri"]),
                        "metadata": meta,
                        "schema_title": art["type"]["schemaTitle"],
                    }
                )
            artifacts[name] = out
        return TaskResult(parameters=params, artifacts=artifacts, log=log)

    def output_artifact(self, result: TaskResult, name: str):
        """An output of an earlier task as an input artifact of a later one (the driver's hand-over)."""
        (art,) = result.artifacts[name]
        return self.artifact(art["schema_title"], art["uri"], art["metadata"])

"""The aligned student as an MLflow Model: ``MLmodel`` (pyfunc flavor), signature and input example
written beside PL's Hugging Face checkpoint, so the registered version's source *is* the checkpoint.

Contract (any registered student, any family mpa trains)::

    model = mlflow.pyfunc.load_model("models:/<name>@<alias>")
    model.predict(pandas.DataFrame({"image": [<base64 PNG/JPEG>], "question": [<text>]}))
    # -> ["<answer>"]: one answer string per row

The question is asked with the run's answer prompt (``task.answer_prompt``: the question and the
task's short-answer instruction), decoded greedily, as PI and evaluation ask it — the served model
answers what was measured.

Layout of the directory (``level/checkpoint``)::

    config.json, model.safetensors, tokenizer/processor files   the plain HF checkpoint (unchanged)
    mpa_serving.json     how to ask: answer template + instruction, max_new_tokens, model settings (JSON)
    MLmodel              flavor ``python_function`` with ``loader_module: mpa.serving.mlmodel``
    input_example.json, serving_input_example.json, requirements.txt, python_env.yaml, conda.yaml

**Why a pyfunc flavor and not ``mlflow.transformers``** (mlflow 3.17.2, tried on a tiny Qwen2-VL):
``mlflow.transformers.save_model`` of an ``image-text-to-text`` pipeline saves, but infers no
signature ("unsupported task type"), cannot rebuild the pipeline on load ("Impossible to guess which
processor to use"), and its pyfunc ``predict`` has no branch for ``ImageTextToTextPipeline`` ("not
enabled for pyfunc predict functionality"). It would also copy the weights into its own layout.

**Why ``loader_module`` and not a ``PythonModel``:** the MLmodel names an importable module of the
installed ``mpa`` package (MLflow's custom-flavor mechanism, how its built-in flavors load); nothing
in the artifact is code — no cloudpickled object and no models-from-code file copied into the
run's artifacts. Loading runs only code the serving environment installed. ``mpa_serving.json``
is plain data. (A remote-code family, e.g. InternVL2, still runs the checkpoint's own modelling
code: only when the student was configured with ``trust_remote_code: true``, which is kept.)
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mpa.config import ModelConfig
    from mpa.tasks import Task

log = logging.getLogger(__name__)

SETTINGS_FILE = "mpa_serving.json"
LOADER_MODULE = "mpa.serving.mlmodel"
FORMAT_VERSION = 1
#: Model settings the served model keeps from the run's student config (the rest is run-specific).
MODEL_KEYS = ("trust_remote_code", "dtype", "batch_size", "min_pixels", "max_pixels", "options")
DEFAULT_MAX_NEW_TOKENS = 16  # evaluate.max_new_tokens' default: the answers PI and evaluation measured


class ServingInputError(ValueError):
    """A request the served model cannot answer (names the row and what is wrong)."""


def signature() -> Any:
    """Inputs: columns ``image`` (base64 PNG/JPEG) and ``question`` (text); output: one answer string per row."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, "image"), ColSpec(DataType.string, "question")]),
        outputs=Schema([ColSpec(DataType.string, "answer")]),
    )


def example_image_b64() -> str:
    """A small PNG (a red square on white), base64: the input example and the tests' request."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (56, 56), "white")
    ImageDraw.Draw(img).rectangle([14, 14, 41, 41], fill="red")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def input_example() -> Any:
    import pandas as pd

    return pd.DataFrame({"image": [example_image_b64()], "question": ["What colour is the square?"]})


def requirements() -> list[str]:
    """The model's pip requirements: mpa and what it needs to answer, at the versions that wrote it.

    Note: PyPI's unrelated ``mpa`` project has no release with our version; serve in an environment that
    has this ``mpa`` installed (our image, or ``--env-manager local``), not one MLflow builds from PyPI.
    """
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("mpa", "mlflow", "torch", "transformers", "accelerate", "safetensors", "pillow", "pandas"):
        try:
            out.append(f"{dist}=={version(dist).split('+')[0]}")  # drop local labels (torch 2.x+cpu)
        except PackageNotFoundError:
            out.append(dist)
    return out


def write_mlmodel(checkpoint: str | Path, student: ModelConfig, task: Task,
                  max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> Path:
    """Make the HF checkpoint directory ``checkpoint`` an MLflow Model (nothing of the weights is copied).

    Files appear one by one by atomic rename, ``MLmodel`` last: a directory with ``MLmodel`` is complete.
    Returns the path of ``MLmodel``.
    """
    import mlflow.pyfunc
    from mlflow.models import Model

    from mpa.redact import redact_text

    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not a Hugging Face checkpoint (no config.json)")
    settings = {
        "format": FORMAT_VERSION,
        "task": task.name,
        "answer_template": task.answer_template,
        "answer_instruction": task.answer_instruction,
        "max_new_tokens": int(max_new_tokens),
        "model": _model_settings(student),
        "base_model": redact_text(student.model),
    }
    (checkpoint / "MLmodel").unlink(missing_ok=True)  # rewritten: incomplete until MLmodel is back
    tmp = Path(tempfile.mkdtemp(prefix=".mlmodel-", dir=checkpoint.parent))
    try:
        staged = tmp / "model"
        mlflow.pyfunc.save_model(
            path=str(staged), loader_module=LOADER_MODULE, signature=signature(), input_example=input_example(),
            pip_requirements=requirements(),
        )
        (staged / SETTINGS_FILE).write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
        meta = Model.load(str(staged / "MLmodel"))  # MLflow sized the staged files only: size the whole model
        meta.model_size_bytes = sum(p.stat().st_size for d in (checkpoint, staged) for p in d.iterdir()
                                    if p.is_file() and p.name != "MLmodel")
        meta.save(str(staged / "MLmodel"))
        files = sorted(p for p in staged.iterdir() if p.name != "MLmodel")
        for path in [*files, staged / "MLmodel"]:
            if path.is_dir():
                raise RuntimeError(f"unexpected directory {path.name} in the MLflow model MLflow wrote")
            os.replace(path, checkpoint / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return checkpoint / "MLmodel"


def _model_settings(student: ModelConfig) -> dict[str, Any]:
    """The loading settings the served model keeps; secret options are left out (the model is shared)."""
    from mpa.redact import is_secret_key, redact

    kept = {k: v for k, v in student.model_dump(mode="json").items() if k in MODEL_KEYS}
    kept["options"] = redact({k: v for k, v in kept.get("options", {}).items() if not is_secret_key(str(k))})
    return kept


def make_mlflow_model(checkpoint: str | Path, student: ModelConfig, task: Task) -> bool:
    """PL's one call at the end of its final save: :func:`write_mlmodel`, or (MLflow not installed) a
    warning and False — the checkpoint stays a plain HF checkpoint and ``mpa register`` adds the MLmodel."""
    try:
        import mlflow.pyfunc  # noqa: F401
    except ModuleNotFoundError:
        log.warning("MLflow is not installed: %s is a plain Hugging Face checkpoint (no MLmodel); "
                    "`mpa register` makes it an MLflow Model", checkpoint)
        return False
    write_mlmodel(checkpoint, student, task)
    return True


def has_mlmodel(checkpoint: str | Path) -> bool:
    return (Path(checkpoint) / "MLmodel").is_file() and (Path(checkpoint) / SETTINGS_FILE).is_file()


# --- loading: MLflow's pyfunc calls _load_pyfunc(<model dir>) ---------------------------------------------


class StudentModel:
    """The loaded student behind ``mlflow.pyfunc``: ``predict(DataFrame[image, question]) -> list[str]``."""

    def __init__(self, path: str | Path, settings: dict[str, Any]) -> None:
        from mpa.config import ModelConfig
        from mpa.vlm.hf import HFVLM

        if settings.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}/{SETTINGS_FILE}: format {settings.get('format')!r} is not "
                             f"{FORMAT_VERSION}; serve it with the mpa version that wrote it")
        self.settings = settings
        cfg = ModelConfig.model_validate({**settings["model"], "model": str(path), "backend": "hf"})
        self.batch_size = cfg.batch_size
        self.vlm = HFVLM(cfg)

    def prompt(self, question: str) -> str:
        s = self.settings
        return s["answer_template"].format(question=question.strip(), instruction=s["answer_instruction"])

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> list[str]:
        from mpa.vlm.base import GenParams, VLMRequest

        try:
            rows = _rows(model_input)
            requests = [VLMRequest(decode_image(img, i), self.prompt(_question(q, i)))
                        for i, (img, q) in enumerate(rows)]
        except ServingInputError as exc:  # a bad request, not a server fault (HTTP 400 from `mlflow models serve`)
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        gen = GenParams(max_new_tokens=int(self.settings["max_new_tokens"]), temperature=0.0)
        answers: list[str] = []
        for b in range(0, len(requests), self.batch_size):
            answers.extend(a.strip() for a in self.vlm.generate(requests[b:b + self.batch_size], gen))
        return answers


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> StudentModel:
    """MLflow's loader entry for ``loader_module: mpa.serving.mlmodel`` (``data_path``: the model directory)."""
    path = Path(data_path)
    settings = json.loads((path / SETTINGS_FILE).read_text(encoding="utf-8"))
    if model_config and "max_new_tokens" in model_config:
        settings["max_new_tokens"] = int(model_config["max_new_tokens"])
    return StudentModel(path, settings)


def _rows(model_input: Any) -> list[tuple[Any, Any]]:
    import pandas as pd

    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    if not isinstance(model_input, pd.DataFrame):
        raise ServingInputError(f"expected a table with columns image, question; got {type(model_input).__name__}")
    missing = [c for c in ("image", "question") if c not in model_input.columns]
    if missing:
        raise ServingInputError(f"missing column(s) {', '.join(missing)}: send image (base64 PNG/JPEG) and question")
    return list(zip(model_input["image"].tolist(), model_input["question"].tolist(), strict=True))


def _question(q: Any, row: int) -> str:
    if not isinstance(q, str) or not q.strip():
        raise ServingInputError(f"row {row}: question must be non-empty text")
    return q


def decode_image(b64: Any, row: int = 0) -> Any:
    """A base64 PNG/JPEG (a ``data:image/...;base64,`` prefix allowed) as an RGB PIL image."""
    if isinstance(b64, bytes):
        b64 = b64.decode("ascii", errors="replace")
    if not isinstance(b64, str) or not b64.strip():
        raise ServingInputError(f"row {row}: image must be a base64-encoded PNG or JPEG string")
    text = b64.strip()
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServingInputError(f"row {row}: image is not valid base64 ({exc})") from None
    from mpa.data.images import UnreadableImage
    from mpa.data.images import decode_image as decode  # the one decoder: EXIF, alpha on white, 16-bit, size cap

    try:
        return decode(data, f"row {row}")
    except UnreadableImage as exc:
        raise ServingInputError(f"row {row}: image is not a readable PNG/JPEG ({exc})") from None

"""The aligned student is an MLflow Model: PL writes MLmodel + signature + input example beside the HF
checkpoint, and ``mlflow.pyfunc`` answers ``DataFrame[image (base64), question]`` with one string per row,
the same answer the engine gives, for every family mpa trains (tiny real architectures, built here)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from servers import no_servers_env  # noqa: F401 - fixture
from test_adapters_internvl2_remote import remote_ckpt  # noqa: F401 - the remote-code InternVL2 checkpoint

from mpa.config import ModelConfig, TrainConfig
from mpa.devtools.tinymodels import TINY_QUESTION, build_tiny, tiny_image
from mpa.serving.mlmodel import SETTINGS_FILE, ServingInputError, decode_image, has_mlmodel, write_mlmodel
from mpa.tasks import get_task
from mpa.vlm.base import GenParams, VLMRequest


def b64png(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def b64jpeg(img) -> str:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=95)
    return base64.b64encode(buf.getvalue()).decode()


def engine_answers(ckpt, imgs, questions, trust_remote_code=False) -> list[str]:
    """What evaluation asks and answers: the task's answer prompt, greedy, 16 new tokens."""
    from mpa.vlm.hf import HFVLM

    vlm = HFVLM(ModelConfig(model=str(ckpt), device="cpu", trust_remote_code=trust_remote_code))
    task = get_task("textvqa")
    out = vlm.generate([VLMRequest(i, task.answer_prompt(q)) for i, q in zip(imgs, questions, strict=True)],
                       GenParams(max_new_tokens=16, temperature=0.0))
    return [a.strip() for a in out]


def assert_pyfunc_answers_like_the_engine(ckpt, trust_remote_code=False):
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import get_model_info

    imgs = [tiny_image("blue", 3), tiny_image("red", 5)]
    questions = [TINY_QUESTION, "What colour is it?"]
    # one PNG, one JPEG: what the predict sees after decoding is what the engine gets from the same bytes
    payload = [b64png(imgs[0]), b64jpeg(imgs[1])]
    decoded = [decode_image(p) for p in payload]
    model = mlflow.pyfunc.load_model(str(ckpt))
    got = model.predict(pd.DataFrame({"image": payload, "question": questions}))
    assert isinstance(got, list) and len(got) == 2 and all(isinstance(a, str) for a in got)
    assert got == engine_answers(ckpt, decoded, questions, trust_remote_code)
    sig = get_model_info(str(ckpt)).signature
    assert [(c.name, c.type.name) for c in sig.inputs.inputs] == [("image", "string"), ("question", "string")]
    assert [(c.name, c.type.name) for c in sig.outputs.inputs] == [("answer", "string")]
    return got


def test_level_writes_an_mlflow_model_beside_the_checkpoint(tiny_ws, tmp_path):
    from mpa.stages.level import level

    tiny_image("green", 1).save(tmp_path / "a.png")
    rows = [{"image": str(tmp_path / "a.png"), "question": TINY_QUESTION, "answer": "green"}] * 2
    (tmp_path / "parity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = level(samples_path=tmp_path / "parity.jsonl", student=ModelConfig(model=str(tiny_ws["student"]), device="cpu"),
              task=get_task("textvqa"), cfg=TrainConfig(batch_size=2, learning_rate=1e-3, epochs=1),
              out_dir=tmp_path / "level", show=False)
    ckpt = tmp_path / "level" / "checkpoint"
    assert s.checkpoint == str(ckpt) and has_mlmodel(ckpt) and (ckpt / "config.json").is_file()
    mlmodel = (ckpt / "MLmodel").read_text()
    assert "loader_module: mpa.serving.mlmodel" in mlmodel and "cloudpickle" not in mlmodel
    assert not list(ckpt.rglob("*.pkl")) and not (ckpt / "python_model.pkl").exists()  # nothing to unpickle
    assert (ckpt / "input_example.json").is_file() and (ckpt / "serving_input_example.json").is_file()
    settings = json.loads((ckpt / SETTINGS_FILE).read_text())
    assert settings["answer_instruction"] == get_task("textvqa").answer_instruction
    assert settings["base_model"] == str(tiny_ws["student"])
    assert_pyfunc_answers_like_the_engine(ckpt)


@pytest.mark.parametrize("family", ["smolvlm", "llava", "internvl", "qwen2_5_vl"])
def test_pyfunc_answers_like_the_engine_for_each_family(family, tmp_path):
    ckpt = build_tiny(family, tmp_path / family)
    write_mlmodel(ckpt, ModelConfig(model=str(ckpt)), get_task("textvqa"))
    assert_pyfunc_answers_like_the_engine(ckpt)


def test_pyfunc_trained_qwen2vl_answers_a_colour(tiny_ws, tmp_path):
    import shutil

    ckpt = tmp_path / "teacher"
    shutil.copytree(tiny_ws["teacher"], ckpt)
    write_mlmodel(ckpt, ModelConfig(model=str(ckpt)), get_task("textvqa"))
    got = assert_pyfunc_answers_like_the_engine(ckpt)
    assert got[0] == "blue"  # the trained tiny Qwen2-VL reads the colour (greedy: deterministic)


def test_pyfunc_keeps_trust_remote_code_for_internvl2(remote_ckpt, tmp_path):  # noqa: F811
    import shutil

    ckpt = tmp_path / "internvl2"
    shutil.copytree(remote_ckpt, ckpt)
    write_mlmodel(ckpt, ModelConfig(model=str(ckpt), trust_remote_code=True), get_task("textvqa"))
    assert json.loads((ckpt / SETTINGS_FILE).read_text())["model"]["trust_remote_code"] is True
    assert_pyfunc_answers_like_the_engine(ckpt, trust_remote_code=True)


@pytest.mark.parametrize(("value", "why"), [("", "base64-encoded"), ("not base64!", "not valid base64"),
                                            (base64.b64encode(b"plain text").decode(), "not a readable")])
def test_bad_images_are_one_line_errors_naming_the_row(value, why):
    with pytest.raises(ServingInputError, match=f"row 3: image .*{why}"):
        decode_image(value, 3)


def test_data_url_prefix_is_accepted():
    img = decode_image("data:image/png;base64," + b64png(tiny_image("red", 0)))
    assert img.mode == "RGB" and img.size == (56, 56)


@pytest.mark.usefixtures("no_servers_env")
def test_register_makes_an_older_checkpoint_an_mlflow_model(tiny_config, tiny_ws, tmp_path):
    """A run whose PL predates MLflow Models (no MLmodel): `register` adds it, and the version loads as pyfunc."""
    import shutil

    import mlflow.pyfunc
    import pandas as pd
    import yaml

    from mpa.stages.register import register

    run = tmp_path / "old-run"
    ckpt = run / "level" / "checkpoint"
    shutil.copytree(tiny_ws["teacher"], ckpt)
    (run / "config.yaml").write_text(yaml.safe_dump({**tiny_config, "out": str(run)}))
    (run / "summary.json").write_text(json.dumps({"out": str(run)}))
    assert not has_mlmodel(ckpt)
    v = register(run_dir=run, name="older")
    assert has_mlmodel(ckpt) and v.alias == "challenger"
    mlflow.set_tracking_uri(f"sqlite:///{run / 'mlflow' / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model(f"models:/older@{v.alias}")
    finally:
        mlflow.set_tracking_uri(None)
    img = tiny_image("blue", 3)
    got = model.predict(pd.DataFrame({"image": [b64png(img)], "question": [TINY_QUESTION]}))
    assert got == engine_answers(ckpt, [img], [TINY_QUESTION])


def test_secret_student_options_stay_out_of_the_served_model(tiny_ws, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ws["student"], ckpt)
    student = ModelConfig(model=str(ckpt), options={"password": "PLANTED-pw", "api_key": "PLANTED-key",
                                                     "max_tiles": 4, "note": "Bearer PLANTED-bearer-token"})
    write_mlmodel(ckpt, student, get_task("textvqa"))
    text = "".join(p.read_text(errors="ignore") for p in ckpt.iterdir() if p.suffix in (".json", ".yaml", ".txt")
                   or p.name == "MLmodel")
    assert "PLANTED" not in text
    assert json.loads((ckpt / SETTINGS_FILE).read_text())["model"]["options"]["max_tiles"] == 4

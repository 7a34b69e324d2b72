"""The MPA pipeline: the committed compile is current, the DAG is what the docs say, the run
parameters are prepare's, and the shipped settings and params files are usable."""

from __future__ import annotations

import inspect
import json
import re

import pytest
import yaml

pytest.importorskip("kfp")
pytest.importorskip("kfp.kubernetes")

import mpa  # noqa: E402
from mpa.config import load_config  # noqa: E402
from mpa.orchestrate.kubeflow.params import PIPELINE_ONLY, config_field  # noqa: E402
from mpa.orchestrate.kubeflow.settings import MODEL_STAGES, load_settings, settings_from_dict  # noqa: E402
from mpa_kfp.components.data_processing.prepare import prepare  # noqa: E402
from mpa_kfp.pipelines.training.mpa.pipeline import (  # noqa: E402
    COMPILED,
    PARAMS_DIR,
    RUN_PARAMETERS,
    SETTINGS_DIR,
    compile_pipeline,
    mpa_pipeline,
)


@pytest.fixture(scope="module")
def spec() -> tuple[dict, dict]:
    assert len(list(yaml.safe_load_all(COMPILED.read_text()))) == 2, "expected the pipeline and platform specs"
    return _load_both(COMPILED)


def _load_both(path) -> tuple[dict, dict]:
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _containers(pipeline: dict) -> dict[str, dict]:
    return {name: ex["container"] for name, ex in pipeline["deploymentSpec"]["executors"].items()}


def test_compiled_pipeline_is_not_stale(tmp_path):
    fresh = compile_pipeline(tmp_path / "pipeline.yaml")
    assert fresh.read_text() == COMPILED.read_text(), (
        "pipelines/training/mpa/pipeline.yaml is stale: run `mpa pipeline compile -o "
        "pipelines/training/mpa/pipeline.yaml` and commit it"
    )


def test_run_parameters_are_prepares_and_name_config_fields(spec):
    pipeline, _ = spec
    inputs = pipeline["root"]["inputDefinitions"]["parameters"]
    prep = inspect.signature(prepare.python_func).parameters
    assert list(inputs) == sorted(inputs)  # the compiler sorts them; the order of prepare is RUN_PARAMETERS
    assert set(inputs) == {p.name for p in RUN_PARAMETERS} == set(prep) - {"run_spec", "resolved_rounds"}
    assert set(PIPELINE_ONLY) <= set(inputs)
    for name, definition in inputs.items():
        if name in PIPELINE_ONLY:
            continue
        config_field(name)  # every other parameter names exactly one RunConfig field
        assert definition.get("isOptional") is True and "defaultValue" not in definition, name  # unset: no value
        assert definition.get("description"), name  # the KFP UI shows it
    assert inputs["shards"]["defaultValue"] == prep["shards"].default
    root = pipeline["root"]["dag"]["tasks"]["prepare"]["inputs"]["parameters"]
    assert {k: v["componentInputParameter"] for k, v in root.items()} == {k: k for k in inputs}


def test_fan_out_over_shards_and_fan_in(spec):
    pipeline, _ = spec
    root = pipeline["root"]["dag"]["tasks"]
    loops = [name for name, t in root.items() if "parameterIterator" in t]
    assert len(loops) == 1
    loop_name, loop = loops[0], root[loops[0]]
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("prepare-Output")
    assert loop["iteratorPolicy"]["parallelismLimit"] == 8
    body = pipeline["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(body) == {"annotate", "identify"}
    assert body["identify"]["dependentTasks"] == ["annotate"]
    merge = root["merge"]
    assert merge["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]["producerTask"] == loop_name
    assert pipeline["components"]["comp-merge"]["inputDefinitions"]["artifacts"]["shards"]["isArtifactList"] is True
    assert root["level"]["inputs"]["artifacts"]["parity"]["taskOutputArtifact"]["producerTask"] == "merge"
    assert root["evaluate-base"]["dependentTasks"] == ["prepare"]  # runs alongside PA/PI


def _tree(pipeline: dict) -> dict[str, tuple[list[str], dict]]:
    """Every task by name: (the conditions of the groups around it, outermost first; the task)."""
    out: dict[str, tuple[list[str], dict]] = {}

    def walk(dag: dict, conds: list[str]) -> None:
        for name, task in dag["tasks"].items():
            here = conds + ([task["triggerPolicy"]["condition"]] if task.get("triggerPolicy", {}).get("condition")
                            else [])
            comp = pipeline["components"][task["componentRef"]["name"]]
            if "dag" in comp:
                walk(comp["dag"], here)
            else:
                assert name not in out, name
                out[name] = (here, task)

    walk(pipeline["root"]["dag"], [])
    return out


def _rounds_cond(r: int, negated: bool) -> str:
    cond = f"int(inputs.parameter_values['pipelinechannel--prepare-resolved_rounds']) < {r}"
    return f"!({cond})" if negated else cond


def test_register_only_if_better_and_registers_the_final_students_artifact_uri(spec):
    """One gate → If → register per number of rounds a run may ask for (each in its branch of the rounds'
    If/Else): the gate reads that round's score and register its checkpoint URI (a string: the register pod
    downloads no checkpoint)."""
    pipeline, _ = spec
    tree = _tree(pipeline)
    chain = [name for name, _ in sorted(((n, t) for n, (_, t) in tree.items()
                                         if t["componentRef"]["name"].startswith("comp-mpa-round")),
                                        key=lambda x: x[1]["inputs"]["parameters"]["round_number"]["runtimeValue"]
                                        ["constant"])]
    finals = ["evaluate-checkpoint", *chain]  # the final student's evaluation when the run asks for 1, 2, 3 rounds
    for asked, producer in enumerate(finals, 1):
        gate = "gate" if asked == 1 else f"gate-{asked}"
        register = "register" if asked == 1 else f"register-{asked}"
        gate_conds, gate_task = tree[gate]
        want = [_rounds_cond(r, True) for r in range(2, asked + 1)]
        if asked < len(finals):
            want.append(_rounds_cond(asked + 1, False))
        assert gate_conds == want, gate
        after = gate_task["inputs"]["parameters"]["score_after"]
        score = "Output" if asked == 1 else "score"
        assert after.get("taskOutputParameter") == {"producerTask": producer, "outputParameterKey": score} or \
            after.get("componentInputParameter") == f"pipelinechannel--{producer}-{score}", (gate, after)
        before = gate_task["inputs"]["parameters"]["score_before"]
        assert "evaluate-base" in json.dumps(before)
        reg_conds, reg = tree[register]
        assert reg_conds == [*want, f"inputs.parameter_values['pipelinechannel--{gate}-Output'] == true"]
        uri = reg["inputs"]["parameters"]["checkpoint_uri"]["componentInputParameter"]
        assert uri == ("pipelinechannel--level-Output" if asked == 1 else f"pipelinechannel--{producer}-checkpoint_uri")
        assert "checkpoint" not in reg["inputs"].get("artifacts", {})
    reg = pipeline["deploymentSpec"]["executors"]["exec-register"]
    assert reg["container"]["image"].endswith(":" + mpa.__version__)


def _round_tasks(pipeline: dict) -> list[str]:
    """The round tasks (wherever they sit) in chain order (round 2 first)."""
    rounds = {t["taskInfo"]["name"]: name for name, (_, t) in _tree(pipeline).items()
              if t["componentRef"]["name"].startswith("comp-mpa-round")}
    return [rounds[k] for k in sorted(rounds, key=lambda n: int(n.rsplit("-", 1)[1]))]


def test_rounds_are_a_chain_of_max_rounds_minus_one_tasks_each_started_only_if_asked(spec):
    pipeline, _ = spec
    tree = _tree(pipeline)
    chain = _round_tasks(pipeline)
    assert len(chain) == load_settings(None).max_rounds - 1 == 2
    prev = {"prev_checkpoint": ("level", "checkpoint"), "prev_union": ("merge", "parity"),
            "prev_predictions": ("evaluate-checkpoint", "predictions")}
    prev_params = {"prev_k": ("merge", "Output"), "prev_score": ("evaluate-checkpoint", "Output")}
    for i, name in enumerate(chain):
        conds, task = tree[name]
        r = i + 2
        assert conds == [_rounds_cond(k, True) for k in range(2, r + 1)], name  # runs only if rounds >= r
        assert task["taskInfo"]["name"] == f"round-{r}"
        assert task["inputs"]["parameters"]["round_number"]["runtimeValue"]["constant"] == r
        arts, params = task["inputs"]["artifacts"], task["inputs"]["parameters"]
        assert arts["parity"]["componentInputArtifact"] == "pipelinechannel--merge-parity"
        for key, (producer, output) in {**prev, **prev_params}.items():
            binding = {**arts, **params}[key]
            ref = binding.get("taskOutputArtifact") or binding.get("taskOutputParameter")
            src = binding.get("componentInputArtifact") or binding.get("componentInputParameter")
            assert (ref and ref["producerTask"] == producer) or src == f"pipelinechannel--{producer}-{output}", \
                (name, key, binding)
        if i == 0:
            assert params["prev_stopped"]["runtimeValue"]["constant"] == ""
        else:
            assert params["prev_stopped"] == {"componentInputParameter": f"pipelinechannel--{chain[i - 1]}-stopped"}
        # the next round continues from this one's outputs
        prev = {"prev_checkpoint": (name, "checkpoint"), "prev_union": (name, "union"),
                "prev_predictions": (name, "predictions")}
        prev_params = {"prev_k": (name, "k"), "prev_score": (name, "score")}
    prepare = pipeline["deploymentSpec"]["executors"]["exec-prepare"]["container"]
    assert {"name": "MPA_MAX_ROUNDS", "value": "3"} in prepare["env"]  # prepare refuses more rounds than compiled


def test_one_round_compiles_the_dag_without_round_tasks(tmp_path):
    pipeline, _ = _load_both(compile_pipeline(tmp_path / "p.yaml", settings_from_dict({"max_rounds": 1})))
    root = pipeline["root"]["dag"]["tasks"]
    assert not _round_tasks(pipeline) and not any(c.startswith("comp-mpa-round") for c in pipeline["components"])
    assert root["gate"]["inputs"]["parameters"]["score_after"]["taskOutputParameter"]["producerTask"] == \
        "evaluate-checkpoint"
    cond = next(t for t in root.values() if t.get("triggerPolicy", {}).get("condition"))
    register = pipeline["components"][cond["componentRef"]["name"]]["dag"]["tasks"]["register"]
    assert register["inputs"]["parameters"]["checkpoint_uri"]["componentInputParameter"] == \
        "pipelinechannel--level-Output"


def test_the_evaluation_report_compares_with_the_base_student_on_the_parity_set(spec):
    pipeline, _ = spec
    tree = _tree(pipeline)
    _, after = tree["evaluate-checkpoint"]
    assert after["inputs"]["artifacts"]["before"]["taskOutputArtifact"] == {"producerTask": "evaluate-base",
                                                                           "outputArtifactKey": "predictions"}
    assert after["inputs"]["artifacts"]["parity"]["taskOutputArtifact"] == {"producerTask": "merge",
                                                                           "outputArtifactKey": "parity"}
    for comp in ("comp-evaluate-checkpoint", "comp-mpa-round"):
        report = pipeline["components"][comp]["outputDefinitions"]["artifacts"]["report"]
        assert report["artifactType"]["schemaTitle"] == "system.HTML"  # the KFP UI's Visualization tab


def test_components_are_thin_and_install_nothing(spec):
    pipeline, _ = spec
    for name, c in _containers(pipeline).items():
        src = c["command"][-1]
        assert "pip install" not in src and "pip" not in " ".join(c["command"][:-1]), name
        body = re.split(r"\)(?: -> [^\n]+)?:\n", src.split("\ndef ", 1)[1], maxsplit=1)[1]
        code = [ln for ln in body.split('"""')[-1].splitlines() if ln.strip()]
        assert sum("from mpa.orchestrate.kubeflow.steps import" in ln for ln in code) == 1, name
        assert len(code) <= 4, f"{name} is not a thin wrapper: {code}"


def test_resources_placement_and_model_cache(spec):
    pipeline, k8s = spec
    settings = load_settings(None)
    for name, c in _containers(pipeline).items():
        stage = k8s[name]["podMetadata"]["labels"]["mpa/stage"]
        res = settings.stage(stage)
        r = c["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert r.get(key), f"{name} has no {key}"
        assert ("accelerator" in r) == (stage in MODEL_STAGES), name
        assert ("mpa-gpu" in c["image"]) == (res.image == "gpu"), name
        assert ("pvcMount" in k8s[name]) == res.model_cache, name
        assert k8s[name]["activeDeadlineSeconds"] == str(res.timeout_seconds) or \
            int(k8s[name]["activeDeadlineSeconds"]) == res.timeout_seconds, name
    assert _containers(pipeline)["exec-level"]["resources"]["resourceMemoryLimit"] == "96Gi"


def test_secrets_are_references_never_values(spec):
    pipeline, k8s = spec
    for name, ex in k8s.items():
        for s in ex.get("secretAsEnv", []):
            assert set(s) <= {"secretName", "secretNameParameter", "keyToEnv", "optional"}, name
    plain = {"MPA_MODEL_CACHE", "MPA_SCRATCH", "MPA_TEACHER_IN_POD", "MPA_MAX_ROUNDS", "PYTHONUNBUFFERED",
             "TOKENIZERS_PARALLELISM"}
    for c in _containers(pipeline).values():
        assert {e["name"] for e in c.get("env", [])} <= plain
    text = COMPILED.read_text().lower().replace(" ", "")
    for word in ("aws_secret_access_key:", "password:", "api_key:", "token:"):
        assert word not in text, word


@pytest.mark.parametrize("path", sorted(PARAMS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_params_files_are_run_configs(path):
    cfg = load_config(path)  # what `mpa run -c` reads
    assert cfg.evaluate.benchmark and cfg.evaluate.annotations, "the pipeline evaluates before/after"


@pytest.mark.parametrize("path", sorted(SETTINGS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_settings_files_load(path):
    load_settings(path)


def test_local_pipeline_function_has_the_run_parameters():
    assert list(inspect.signature(mpa_pipeline.pipeline_func).parameters) == [p.name for p in RUN_PARAMETERS]


def test_a_scratch_storage_class_is_refused_scratch_is_an_empty_dir(tmp_path):
    """No claim is made for /scratch (a fresh one is root-owned and KFP cannot set fsGroup): a storage class
    for it would be ignored silently, so the compile refuses it in one line."""
    from mpa.orchestrate.kubeflow.settings import SettingsError

    with pytest.raises(SettingsError, match="scratch_storage_class is not used: scratch volumes are emptyDirs"):
        compile_pipeline(tmp_path / "p.yaml", settings_from_dict({"scratch_storage_class": "fast-ssd"}))

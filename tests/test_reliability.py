"""Hostile inputs, concurrent writers, changed settings and kills: what each gets (docs/reliability.md).

Real models (the shipped toy-world teacher and student, a few MB), real files, real subprocesses
killed with SIGKILL, a real local HTTP server for the OpenAI backend, a real embedded MLflow store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from mpa.config import AnnotateConfig, IdentifyConfig, ModelConfig, TrainConfig
from mpa.toyworld import STUDENT_CHECKPOINT, TEACHER_CHECKPOINT

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Toy images, a labeled toy test set and both shipped toy models, loaded once."""
    from mpa.tasks import TOYVQA
    from mpa.toyworld.data import make_testset, make_unlabeled
    from mpa.vlm.hf import HFVLM

    root = tmp_path_factory.mktemp("toy")
    make_unlabeled(root / "unlabeled", 8, seed=0)
    make_testset(root / "test", 7, seed=1000)
    return {
        "root": root,
        "images": root / "unlabeled" / "images",
        "bench": root / "test" / "annotations.json",
        "bench_images": str(root / "test" / "images"),
        "task": TOYVQA,
        "teacher": HFVLM(ModelConfig(model=str(TEACHER_CHECKPOINT), device="cpu", batch_size=8)),
        "student": HFVLM(ModelConfig(model=str(STUDENT_CHECKPOINT), device="cpu", batch_size=8)),
    }


def _images(toy, dst: Path, n: int = 4) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(toy["images"].iterdir())[:n]:
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _annotate(toy, images: Path, out: Path, **kw):
    from mpa.stages.annotate import annotate

    return annotate(images=str(images), teacher=toy["teacher"], task=toy["task"],
                    cfg=AnnotateConfig(temperature=1.0, max_new_tokens=32, qa_per_image=kw.pop("k", 1)),
                    out_path=out, batch_size=kw.pop("batch_size", 8), show=False, **kw)


def _identify(toy, annotations: Path, out: Path, **kw):
    from mpa.stages.identify import identify

    return identify(annotations_path=annotations, teacher=toy["teacher"], student=toy["student"], task=toy["task"],
                    cfg=IdentifyConfig(max_new_tokens=8), out_dir=out, show=False, **kw)


def _one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, out[-3000:]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _mpa(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mpa.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**ENV, "COLUMNS": "400", **(env or {})})


def _toy_config(toy, out: Path, **over) -> Path:
    import yaml

    cfg = {"task": {"name": "toyvqa"}, "teacher": {"model": str(TEACHER_CHECKPOINT), "device": "cpu"},
           "student": {"model": str(STUDENT_CHECKPOINT), "device": "cpu"},
           "data": {"images": str(toy["images"])}, "annotate": {"max_new_tokens": 32},
           "tracking": {"enabled": False}, "out": str(out), **over}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ----------------------------------------------------------------------------- one writer, no duplicates
def test_a_second_writer_is_refused_and_a_killed_writers_lock_goes_with_it(toy, tmp_path):
    from mpa.records import OutputLocked

    out = tmp_path / "run" / "annotations.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from mpa.records import JsonlLog
        log = JsonlLog({str(out)!r})
        print("holding", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(OutputLocked, match=rf"pid {holder.pid} .*another --out") as exc:
            _annotate(toy, toy["images"], out)
        assert "\n" not in str(exc.value)
        assert not out.exists() or out.read_text() == ""  # the refused writer wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel drops the lock with the process
        holder.wait()
    summary = _annotate(toy, toy["images"], out)
    assert summary.n_images == 8 and summary.n_attempts == 8


def test_a_reader_never_counts_a_duplicate(toy, tmp_path):
    from mpa.records import JsonlLog, read_jsonl

    out = tmp_path / "annotations.jsonl"
    _annotate(toy, _images(toy, tmp_path / "imgs", 3), out, k=2)
    lines = out.read_text().splitlines()
    assert len(lines) == 6
    # what two unlocked writers left behind: every group twice, and one image whose k=1 attempt was never
    # written but whose k=0 attempt was, twice ("≥ k records" counted that image as done)
    first = lines[0:2]
    (tmp_path / "dup.jsonl").write_text("\n".join([first[0], first[0], *lines[2:]]) + "\n")
    with JsonlLog(tmp_path / "dup.jsonl", group_of=lambda r: r["image"], group_size=lambda r: 2) as log:
        assert len(log.done) == 2  # the image with one distinct attempt is not done
        assert len(log.records) == 4
    # identify reads each annotation once: no duplicate reaches the audit or the parity set
    two_writers = tmp_path / "two_writers.jsonl"
    two_writers.write_text("\n".join(lines + lines[2:] + [first[0]]) + "\n")
    _identify(toy, two_writers, tmp_path / "pi")
    audit = [r["id"] for r in read_jsonl(tmp_path / "pi" / "audit.jsonl")]
    assert sorted(audit) == sorted({json.loads(ln)["id"] for ln in lines}) and len(audit) == 6
    parity = [r["id"] for r in read_jsonl(tmp_path / "pi" / "parity.jsonl")]
    assert len(parity) == len(set(parity))


# ----------------------------------------------------------------------------- keyed by inputs and settings
def _samples(toy, path: Path, n: int) -> Path:
    rows = [{"image": str(p), "question": "how many bars are there?", "answer": str(i % 5 + 1)}
            for i, p in enumerate(sorted(toy["images"].iterdir())[:n])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_level_is_keyed_by_its_samples_and_settings(toy, tmp_path):
    from mpa.records import StageMismatch
    from mpa.stages.evaluate import evaluate
    from mpa.stages.level import level
    from mpa.vlm.hf import HFVLM

    samples = _samples(toy, tmp_path / "parity.jsonl", 4)
    student = ModelConfig(model=str(STUDENT_CHECKPOINT), device="cpu")

    def train(lr: float, **kw):
        return level(samples_path=samples, student=student, task=toy["task"], show=False, out_dir=tmp_path / "level",
                     cfg=TrainConfig(batch_size=2, learning_rate=lr, epochs=1), **kw)

    first = train(1e-4)
    assert first.learning_rate == 1e-4 and first.steps == 2
    assert train(1e-4).seconds == first.seconds  # the same inputs and settings: the finished result

    from mpa.data.benchmarks import load_benchmark

    bench = load_benchmark("textvqa", str(toy["bench"]), images=toy["bench_images"])
    preds = tmp_path / "eval_after.jsonl"
    aligned = HFVLM(ModelConfig(model=first.checkpoint, device="cpu"))
    evaluate(model=aligned, benchmark="textvqa", samples=bench, predictions_path=preds, max_new_tokens=4)

    with pytest.raises(StageMismatch, match=r"changed: train\.learning_rate.*--force"):
        train(3e-4)
    second = train(3e-4, force=True)
    assert second.learning_rate == 3e-4 and second.seconds != first.seconds

    _samples(toy, samples, 6)  # the parity set changed
    with pytest.raises(StageMismatch, match=r"changed: input samples"):
        train(3e-4)
    assert train(3e-4, force=True).n_samples == 6

    # the checkpoint was retrained in place: its old predictions are not this model's
    retrained = HFVLM(ModelConfig(model=first.checkpoint, device="cpu"))
    with pytest.raises(StageMismatch, match=r"model\.checkpoint"):
        evaluate(model=retrained, benchmark="textvqa", samples=bench, predictions_path=preds, max_new_tokens=4)


def test_predictions_are_keyed_by_the_model(toy, tmp_path):
    from mpa.data.benchmarks import load_benchmark
    from mpa.records import StageMismatch, read_jsonl
    from mpa.stages.evaluate import evaluate

    bench = load_benchmark("textvqa", str(toy["bench"]), images=toy["bench_images"])
    preds = tmp_path / "predictions.jsonl"

    def run(model, **kw):
        return evaluate(model=model, benchmark="textvqa", samples=bench, predictions_path=preds, max_new_tokens=6,
                        **kw)

    teacher = run(toy["teacher"])
    teacher_answers = list(read_jsonl(preds))
    with pytest.raises(StageMismatch, match=r"changed: model\.checkpoint, model\.model.*--predictions.*--force"):
        run(toy["student"])
    assert list(read_jsonl(preds)) == teacher_answers  # refused: nothing overwritten
    student = run(toy["student"], force=True)
    assert student["model"] == str(STUDENT_CHECKPOINT) and teacher["model"] == str(TEACHER_CHECKPOINT)
    assert list(read_jsonl(preds)) != teacher_answers
    assert run(toy["student"])["score"] == student["score"]  # the same model resumes its own file


def test_an_unfinished_stage_output_is_refused_downstream(toy, tmp_path):
    from mpa.records import IncompleteInput, StageMismatch
    from mpa.stages.level import level

    images = _images(toy, tmp_path / "imgs", 8)
    out = tmp_path / "run" / "annotations.jsonl"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from mpa.config import AnnotateConfig, ModelConfig
        from mpa.stages.annotate import annotate
        from mpa.toyworld import TEACHER_CHECKPOINT
        from mpa.tasks import TOYVQA
        from mpa.vlm.hf import HFVLM
        teacher = HFVLM(ModelConfig(model=str(TEACHER_CHECKPOINT), device="cpu"))
        annotate(images={str(images)!r}, teacher=teacher, task=TOYVQA, out_path={str(out)!r}, batch_size=1,
                 cfg=AnnotateConfig(max_new_tokens=32), show=False)
    """)], env=ENV, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.is_file() or len(out.read_text().splitlines()) < 2):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)  # annotate killed part-way
    child.wait()
    n_done = len(out.read_text().splitlines())
    assert 2 <= n_done < 8, n_done

    with pytest.raises(IncompleteInput, match=r"annotations\.jsonl is unfinished.*mpa annotate.*--allow-partial"):
        _identify(toy, out, tmp_path / "run" / "pi")
    assert not (tmp_path / "run" / "pi" / "parity.jsonl").exists()
    pi = _identify(toy, out, tmp_path / "run" / "pi", allow_partial=True)
    assert pi.n_annotations == n_done
    with pytest.raises(IncompleteInput, match=r"parity\.jsonl was made by identify from an unfinished input"):
        level(samples_path=tmp_path / "run" / "pi" / "parity.jsonl", task=toy["task"], cfg=TrainConfig(),
              student=ModelConfig(model=str(STUDENT_CHECKPOINT), device="cpu"), out_dir=tmp_path / "run" / "level")

    assert _annotate(toy, images, out).n_resumed == n_done  # finish PA: it resumes
    with pytest.raises(StageMismatch, match="input annotations"):  # PI's answers were for the partial file
        _identify(toy, out, tmp_path / "run" / "pi")
    assert _identify(toy, out, tmp_path / "run" / "pi", force=True).n_annotations == 8


# ----------------------------------------------------------------------------- bad inputs: skipped with their reason
def _sliver(path: Path) -> Path:
    Image.new("RGB", (1200, 4), (200, 30, 30)).save(path)
    return path


def test_extreme_aspect_ratio_is_skipped_and_recorded(toy, tmp_path):
    from mpa.records import read_jsonl

    images = _images(toy, tmp_path / "imgs", 5)
    _sliver(images / "toy_0_00002b.png")  # sorted into the middle of the one batch
    summary = _annotate(toy, images, tmp_path / "annotations.jsonl")
    assert summary.n_images == 6 and summary.n_unreadable == 1
    recs = {Path(r["image"]).name: r for r in read_jsonl(tmp_path / "annotations.jsonl")}
    assert recs["toy_0_00002b.png"]["error"].startswith("unusable image") and "aspect ratio" in \
        recs["toy_0_00002b.png"]["error"]
    assert sum(r["parse_ok"] for r in recs.values()) >= 4  # the good images of its batch are annotated
    # and PI records the real reason
    _identify(toy, tmp_path / "annotations.jsonl", tmp_path / "pi")
    audit = {Path(r["image"]).name: r for r in read_jsonl(tmp_path / "pi" / "audit.jsonl")}
    assert audit["toy_0_00002b.png"]["reason"].startswith("unusable image")


def test_a_processor_rejection_costs_only_its_own_image(toy, tmp_path, monkeypatch):
    import mpa.stages.annotate as pa
    from mpa.records import read_jsonl

    monkeypatch.setattr(pa, "MAX_ASPECT_RATIO", 1e9)  # no up-front check: the real processor refuses it
    images = _images(toy, tmp_path / "imgs", 5)
    _sliver(images / "toy_0_00002b.png")
    summary = _annotate(toy, images, tmp_path / "annotations.jsonl")
    recs = {Path(r["image"]).name: r for r in read_jsonl(tmp_path / "annotations.jsonl")}
    assert recs["toy_0_00002b.png"]["error"].startswith("rejected by the model's processor")
    assert "aspect ratio" in recs["toy_0_00002b.png"]["error"]
    assert summary.n_attempts == 6 and summary.n_unreadable == 1


def test_images_that_became_unreadable_get_the_real_audit_reason(toy, tmp_path):
    from mpa.records import read_jsonl

    images = _images(toy, tmp_path / "imgs", 4)
    _annotate(toy, images, tmp_path / "annotations.jsonl")
    victim = sorted(images.iterdir())[1]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # corrupted between PA and PI
    _identify(toy, tmp_path / "annotations.jsonl", tmp_path / "pi")
    audit = {r["image"]: r for r in read_jsonl(tmp_path / "pi" / "audit.jsonl")}
    reason = audit[str(victim)]["reason"]
    assert reason.startswith("teacher could not answer: unreadable image") and victim.name in reason
    assert not audit[str(victim)]["kept"]
    counts = json.loads((tmp_path / "pi" / "counts.json").read_text())
    assert counts["failures"] == {"unreadable image": 1}


def test_a_file_without_read_permission_is_skipped_with_its_reason(tmp_path):
    from mpa.stages.annotate import prepare_or_error

    if os.geteuid() != 0:
        img = tmp_path / "locked.png"
        Image.new("RGB", (32, 32)).save(img)
        img.chmod(0)
        err = prepare_or_error(str(img))
    else:  # root reads everything: ask from a forked child that dropped to an unprivileged user
        shared = Path(tempfile.mkdtemp(prefix="mpa-perm-"))
        shared.chmod(0o755)
        img = shared / "locked.png"
        Image.new("RGB", (32, 32)).save(img)
        assert not isinstance(prepare_or_error(str(img)), str)  # readable as root (and every import is warm)
        img.chmod(0)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: drop privileges, ask, report, leave
            try:
                os.setgid(65534)
                os.setuid(65534)
                os.write(write_end, str(prepare_or_error(str(img))).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as fh:
            err = fh.read()
        os.waitpid(pid, 0)
    assert err.startswith("unreadable image") and "PermissionError" in err and "locked.png" in err


def test_a_100k_character_question_is_skipped_and_recorded(toy, tmp_path):
    from mpa.data.benchmarks import load_benchmark
    from mpa.records import read_jsonl
    from mpa.stages.evaluate import evaluate

    data = json.loads(toy["bench"].read_text())
    data["data"][3]["question"] = "how many bars are there? " * 4000  # 100,000 characters
    ann = toy["bench"].with_name("long.json")
    ann.write_text(json.dumps(data))
    bench = load_benchmark("textvqa", str(ann), images=toy["bench_images"])
    t0 = time.perf_counter()
    result = evaluate(model=toy["student"], benchmark="textvqa", samples=bench,
                      predictions_path=tmp_path / "p.jsonl", max_new_tokens=4)
    assert time.perf_counter() - t0 < 60 and result["n"] == 7
    rec = {r["question_id"]: r for r in read_jsonl(tmp_path / "p.jsonl")}["3"]
    assert rec["answer"] == "" and rec["error"].startswith("prompt too long: 1000")

    # the same in PI: an annotation with such a question
    _annotate(toy, _images(toy, tmp_path / "imgs", 2), tmp_path / "annotations.jsonl")
    rows = [json.loads(ln) for ln in (tmp_path / "annotations.jsonl").read_text().splitlines()]
    rows[0].update(question="what? " * 20000, parse_ok=True, answer="3")
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _identify(toy, hostile, tmp_path / "pi")
    audit = list(read_jsonl(tmp_path / "pi" / "audit.jsonl"))
    assert audit[0]["reason"].startswith("teacher could not answer: prompt too long")


# ----------------------------------------------------------------------------- one-line errors
def test_bad_records_name_the_file_and_line(toy, tmp_path):
    from mpa.records import RecordError

    good = tmp_path / "annotations.jsonl"
    _annotate(toy, _images(toy, tmp_path / "imgs", 2), good)
    rows = [json.loads(ln) for ln in good.read_text().splitlines()]
    del rows[1]["image"]
    bad = tmp_path / "missing.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RecordError, match=r"missing\.jsonl:2: missing field 'image'"):
        _identify(toy, bad, tmp_path / "pi1")
    array = tmp_path / "array.jsonl"
    array.write_text(json.dumps(rows, indent=2))
    with pytest.raises(RecordError, match=r"array\.jsonl:1: this is a JSON array, not JSON Lines"):
        _identify(toy, array, tmp_path / "pi2")
    one_line_array = tmp_path / "array1.jsonl"
    one_line_array.write_text(json.dumps(rows))
    with pytest.raises(RecordError, match=r"array1\.jsonl:1: this is a JSON array"):
        _identify(toy, one_line_array, tmp_path / "pi3")


def test_a_json_array_as_samples_is_one_line(toy, tmp_path):
    rows = [json.loads(ln) for ln in _samples(toy, tmp_path / "s.jsonl", 2).read_text().splitlines()]
    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps(rows, indent=1))
    res = _mpa("level", "-c", str(_toy_config(toy, tmp_path / "run")), "--samples", str(samples))
    _one_line_error(res, "samples.json:1", "JSON array")


def test_score_with_predictions_matching_no_question_is_an_error(toy, tmp_path):
    preds = tmp_path / "other.jsonl"
    preds.write_text("".join(json.dumps({"question_id": f"x{i}", "answer": "3"}) + "\n" for i in range(5)))
    res = _mpa("score", "--benchmark", "textvqa", "--annotations", str(toy["bench"]), "--predictions", str(preds))
    _one_line_error(res, "none of the 5 predictions", "'x0'")


def test_a_corrupt_result_cache_is_one_line(toy, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "results.sqlite").write_bytes(b"this is not a database" * 100)
    cfg = _toy_config(toy, tmp_path / "run", cache={"dir": str(cache)})
    res = _mpa("annotate", "-c", str(cfg))
    _one_line_error(res, "results.sqlite", "delete it")


def test_an_unknown_or_missing_device_is_one_line(tmp_path):
    from mpa.vlm.hf import ModelLoadError
    from mpa.vlm.loader import load_vlm

    for device in ("tpu", "cuda:7"):
        with pytest.raises(ModelLoadError, match=rf"device '{device}'.*use auto") as exc:
            load_vlm(ModelConfig(model=str(STUDENT_CHECKPOINT), device=device))
        assert "\n" not in str(exc.value)


def test_a_request_above_its_limit_is_refused_at_compile_time():
    from mpa.orchestrate.kubeflow.settings import SettingsError, settings_from_dict

    with pytest.raises(SettingsError, match=r"stages\.level: .*memory_request 200Gi is above memory_limit 1Gi"):
        settings_from_dict({"stages": {"level": {"memory_request": "200Gi", "memory_limit": "1Gi"}}})
    with pytest.raises(SettingsError, match=r"cpu_request 4 is above cpu_limit 500m"):
        settings_from_dict({"stages": {"gate": {"cpu_request": "4", "cpu_limit": "500m"}}})
    with pytest.raises(SettingsError, match=r"'lots' is not a Kubernetes quantity"):
        settings_from_dict({"stages": {"merge": {"memory_limit": "lots"}}})
    ok = settings_from_dict({"stages": {"level": {"memory_request": "1024Mi", "memory_limit": "1Gi"}}})
    assert ok.stage("level").memory_limit == "1Gi"


def test_demo_refuses_an_s3_out(tmp_path, monkeypatch):
    from mpa.toyworld.demo import run_demo

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"local directory.*aws s3 sync"):
        run_demo("s3://bucket/prefix", n_images=8, n_test=7)
    with pytest.raises(ValueError, match="local directory"):
        run_demo(Path("s3://bucket/prefix"), n_images=8, n_test=7)  # what a Path-typed CLI option makes of it
    assert list(tmp_path.iterdir()) == []  # no folder named "s3:"
    res = _mpa("demo", "--out", "s3://bucket/prefix")
    _one_line_error(res, "s3://bucket/prefix")


def test_promote_of_a_missing_version_is_one_line(tmp_path, monkeypatch):
    from mpa import tracking

    monkeypatch.setenv("MPA_CACHE", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(uri)
    tracking.register_version(c, "toy", str(STUDENT_CHECKPOINT), None, {})
    res = _mpa("promote", "--name", "toy", "--version", "7", "--tracking-uri", uri)
    _one_line_error(res, "'toy' has no version '7'", "its versions: 1")
    with pytest.raises(tracking.TrackingError, match="'nope' does not exist"):
        tracking.promote(c, "nope", "2")


# ----------------------------------------------------------------------------- the OpenAI backend
@pytest.fixture
def openai_endpoint():
    """A local chat-completions endpoint answering what the test scripts: (status, content type, body)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    answers: list[tuple[int, str, bytes] | str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            answer = answers[0] if len(answers) == 1 else answers.pop(0)
            if answer == "hang":
                time.sleep(3)
                return
            status, kind, body = answer
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=srv.serve_forever, daemon=True).start()
    yield answers, f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def _ask(base_url: str, **settings):
    from mpa.config import OpenAISettings
    from mpa.vlm.base import GenParams, VLMRequest
    from mpa.vlm.openai_backend import OpenAIVLM

    cfg = ModelConfig(model="teacher", backend="openai", openai=OpenAISettings(
        base_url=base_url, backoff_base_s=0.01, backoff_max_s=0.02, **settings))
    return OpenAIVLM(cfg).generate([VLMRequest(Image.new("RGB", (8, 8)), "q?")], GenParams(max_new_tokens=4))


@pytest.mark.parametrize(("answer", "settings", "says"), [
    ((401, "application/json", b'{"error": {"message": "Incorrect API key provided"}}'), {},
     ["refused the API key (HTTP 401", "set the environment variable OPENAI_API_KEY"]),
    ((500, "text/plain", b"upstream\nexploded"), {"max_retries": 2},
     ["failed after 3 attempts (last: HTTP 500: upstream exploded)", "check that the server is up"]),
    ("hang", {"max_retries": 1, "timeout_s": 0.5},
     ["failed after 2 attempts (last: no answer within timeout_s=0.5 s)", "raise teacher.openai.max_retries"]),
    ((200, "text/html", b"<html><body>Welcome to nginx!</body></html>"), {},
     ["not JSON (text/html: '<html><body>Welcome to nginx!", "ending in /v1"]),
    ((200, "application/json", b'{"result": "hi", "usage": {}}'), {},
     ["without choices[0].message.content (top-level keys: result, usage)", "OpenAI-compatible"]),
    ((404, "application/json", b'{"detail": "Not Found"}'), {},
     ["HTTP 404", "check base_url"]),
])
def test_openai_backend_failures_are_one_line_naming_the_endpoint(openai_endpoint, answer, settings, says):
    from mpa.errors import MpaError
    from mpa.vlm.openai_backend import OpenAIRequestError

    answers, base_url = openai_endpoint
    answers.append(answer)
    t0 = time.perf_counter()
    with pytest.raises(OpenAIRequestError) as exc:
        _ask(base_url, **settings)
    assert time.perf_counter() - t0 < 10
    msg = str(exc.value)
    assert isinstance(exc.value, MpaError) and "\n" not in msg and f"{base_url}/chat/completions" in msg, msg
    for text in says:
        assert text in msg, msg


def test_openai_backend_without_a_key_names_the_endpoint_and_the_variable(monkeypatch):
    from mpa.errors import MpaError
    from mpa.vlm.openai_backend import OpenAIRequestError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(OpenAIRequestError, match=r"no API key for https://api\.openai\.com/v1: set .*OPENAI_API_KEY") \
            as exc:
        _ask("https://api.openai.com/v1")
    assert isinstance(exc.value, MpaError)


def test_an_openai_failure_is_one_line_at_the_command_line(toy, openai_endpoint, tmp_path):
    answers, base_url = openai_endpoint
    answers.append((401, "application/json", b'{"error": {"message": "Incorrect API key provided"}}'))
    cfg = _toy_config(toy, tmp_path / "run", teacher={"model": "teacher", "backend": "openai",
                                                      "openai": {"base_url": base_url, "max_retries": 0}})
    res = _mpa("annotate", "-c", str(cfg), env={"OPENAI_API_KEY": ""})
    _one_line_error(res, f"{base_url}/chat/completions refused the API key (HTTP 401", "OPENAI_API_KEY")

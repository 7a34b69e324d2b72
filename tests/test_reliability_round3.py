"""Round three of the hostile-user probe (docs/reliability.md): writes that follow links or pass short,
credentials sent where a run directory says, S3 prefixes that pull in their siblings, images decoded
wrongly, encodings that stick, non-finite settings, silent wrong results and tracebacks.

Every test failed on the code before its fix. Real files, real subprocesses (a file-size limit stands in
for a full disk: the kernel then returns short writes and EFBIG exactly as on a full one), real MLflow and
S3 servers where the case needs one.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from PIL import Image
from servers import object_server, s3_env, servers_env, tracking_server  # noqa: F401 - fixtures
from test_reliability import _one_line_error  # the same exit-2, one-line check as the earlier rounds

from mpa.toyworld import STUDENT_CHECKPOINT, TEACHER_CHECKPOINT

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _mpa(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mpa.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**ENV, "COLUMNS": "400", **(env or {})})




def _record(i: int, **extra) -> dict:
    return {"id": f"r{i}", "image": f"/img/{i}.png", "image_sha256": "0" * 64, "task": "toyvqa",
            "prompt_version": "v", "teacher": "t", "question": f"q{i}?", "answer": "red", "parse_ok": True,
            **extra}


# ============================================================================= one safe-open for every write
def test_a_lock_file_planted_as_a_symlink_is_refused_never_truncated(tmp_path):
    from mpa.records import JsonlLog
    from mpa.safeio import WriteFailed

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / "annotations.jsonl.lock").symlink_to(victim)
    with pytest.raises(WriteFailed) as err:
        JsonlLog(out / "annotations.jsonl")
    assert "symbolic link" in str(err.value) and "\n" not in str(err.value)
    assert victim.read_text() == "precious\n"  # before: truncated, then "pid … on …" written into it


def test_a_log_planted_as_a_symlink_is_not_written_through(tmp_path):
    from mpa.records import JsonlLog
    from mpa.safeio import WriteFailed, open_append

    victim = tmp_path / "victim.jsonl"
    victim.write_text(json.dumps(_record(0)) + "\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / "annotations.jsonl").symlink_to(victim)
    with pytest.raises(WriteFailed, match="symbolic link"):
        JsonlLog(out / "annotations.jsonl")
    (out / "train_log.jsonl").symlink_to(victim)  # the PL log's writer (open_append) refuses it too
    with pytest.raises(WriteFailed, match="symbolic link"), open_append(out / "train_log.jsonl", truncate=True):
        pass
    assert victim.read_text() == json.dumps(_record(0)) + "\n"


def test_atomic_writes_never_follow_a_link_at_the_target_or_the_temporary_name(tmp_path):
    from mpa import storage
    from mpa.records import write_json_atomic, write_jsonl_atomic

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    for name, write in [("a.json", lambda p: write_json_atomic(p, {"x": 1})),
                        ("b.jsonl", lambda p: write_jsonl_atomic(p, [{"x": 1}])),
                        ("c.bin", lambda p: storage.write_bytes(p, b"data"))]:
        (run / (name + ".tmp")).symlink_to(victim)  # before: the temporary file was opened through the link
        write(run / name)
        assert not (run / name).is_symlink() and (run / name).stat().st_size > 0
    (run / "d.json").symlink_to(victim)  # a link at the target is replaced, not written through
    write_json_atomic(run / "d.json", {"y": 2})
    assert not (run / "d.json").is_symlink()
    assert victim.read_text() == "precious\n"


_FULL_DISK = textwrap.dedent("""
    import json, resource, signal, sys
    sys.path.insert(0, {src!r})
    from mpa.records import JsonlLog
    from mpa.safeio import WriteFailed
    path = {path!r}
    with JsonlLog(path) as log:
        log.append_group([{{"id": "a", "pad": "x" * 100}}])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (400, 400))  # the disk fills up at byte 400
    try:
        with JsonlLog(path) as log:
            log.append_group([{{"id": "b", "pad": "y" * 500}}])  # crosses the limit: a short write
    except WriteFailed as exc:
        print("ERROR", exc)
        sys.exit(3)
    print("OK")
""")


def test_a_short_write_on_a_full_disk_fails_loudly_and_leaves_no_torn_record(tmp_path):
    path = tmp_path / "annotations.jsonl"
    res = subprocess.run([sys.executable, "-c", _FULL_DISK.format(src=SRC, path=str(path))],
                         capture_output=True, text=True, env=ENV, timeout=120)
    # before: os.write's short count was ignored — "OK", exit 0, a torn record glued to the next append
    assert res.returncode == 3, res.stdout + res.stderr
    msg = res.stdout.strip()
    assert msg.startswith("ERROR cannot write") and str(path) in msg and "re-run" in msg and "\n" not in msg
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and [json.loads(x)["id"] for x in lines[:-1]] == ["a"]  # no partial group left


def test_a_dangling_symlink_or_unwritable_out_is_one_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32)).save(images / "a.png")
    dangling = tmp_path / "out-link"
    dangling.symlink_to(tmp_path / "gone" / "run")
    for out, needle in [(dangling, "does not exist"), (Path("/sys/mpa-h22-test/run"), "cannot create directory")]:
        cfg = tmp_path / "run.yaml"
        cfg.write_text(yaml.safe_dump({
            "task": {"name": "toyvqa"}, "teacher": {"model": str(TEACHER_CHECKPOINT), "device": "cpu"},
            "student": {"model": str(STUDENT_CHECKPOINT), "device": "cpu"}, "data": {"images": str(images)},
            "tracking": {"enabled": False}, "out": str(out)}))
        # before: FileExistsError / PermissionError tracebacks
        _one_line_error(_mpa("run", "--config", str(cfg)), str(out), needle)


def test_annotate_on_a_full_disk_exits_with_one_line_not_success(tmp_path):
    import resource
    import signal

    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        Image.new("RGB", (84, 84), (40 * i, 90, 200)).save(images / f"{i}.png")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "task": {"name": "toyvqa"}, "teacher": {"model": str(TEACHER_CHECKPOINT), "device": "cpu"},
        "student": {"model": str(STUDENT_CHECKPOINT), "device": "cpu"}, "data": {"images": str(images)},
        "annotate": {"max_new_tokens": 32}, "cache": {"enabled": False},
        "tracking": {"enabled": False}, "out": str(tmp_path / "run")}))

    def full_disk() -> None:  # every file this process writes stops at 1,500 bytes, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))

    res = subprocess.run([sys.executable, "-m", "mpa.cli", "annotate", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=300, env={**ENV, "COLUMNS": "400"}, preexec_fn=full_disk)
    # before: exit 0 and the stage marked complete over a torn record
    _one_line_error(res, "cannot write", "re-run the same command")
    mark = json.loads((tmp_path / "run" / "annotations.jsonl.stage.json").read_text())
    assert mark["complete"] is False
    for line in (tmp_path / "run" / "annotations.jsonl").read_bytes().splitlines():
        json.loads(line)  # no torn record left behind


def test_a_full_disk_under_the_result_cache_is_not_blamed_on_the_cache(tmp_path):
    script = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {SRC!r})
        from mpa.cache import ResultCache
        from mpa.errors import MpaError
        cache = ResultCache({str(tmp_path / "cache")!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
            for i in range(100):
                cache.put_many({{f"k{{i}}-{{j}}": "v" * 4000 for j in range(20)}})
        except MpaError as exc:
            print(type(exc).__name__, exc)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=120)
    out = res.stdout.strip()
    # before: "result cache … cannot be used (database or disk is full) … delete it"
    assert out.startswith("WriteFailed cannot write"), res.stdout + res.stderr
    assert "delete it" not in out and "re-run" in out


# ============================================================================= credentials
def _finished_run(tmp_path: Path, tracking_uri: str) -> Path:
    run = tmp_path / "finished"
    (run / "level" / "checkpoint").mkdir(parents=True)
    (run / "level" / "checkpoint" / "config.json").write_text("{}")
    (run / "summary.json").write_text(json.dumps({"task": "toyvqa"}))
    (run / "config.yaml").write_text(yaml.safe_dump({
        "task": {"name": "toyvqa"}, "teacher": {"model": "t"}, "student": {"model": "s"},
        "data": {"images": "imgs"}, "tracking": {"uri": tracking_uri}}))
    return run


def test_register_never_takes_the_tracking_server_from_the_run_directory(tmp_path, monkeypatch):
    from mpa.stages.register import register
    from mpa.tracking import TrackingError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9/")  # the user's own server
    run = _finished_run(tmp_path, "http://collector.invalid:5000")
    with pytest.raises(TrackingError) as err:
        register(run_dir=run)
    msg = str(err.value)
    # before: the run's URI won and the user's MLflow credentials went to collector.invalid
    assert "collector.invalid" in msg and "--tracking-uri" in msg and "credentials" in msg
    res = _mpa("register", "--run-dir", str(run), env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9/"})
    _one_line_error(res, "collector.invalid", "--tracking-uri")


def test_mlflows_view_run_line_shows_no_credentials(servers_env, capfd):  # noqa: F811 - the fixture
    from mpa.tracking.server import client

    uri = servers_env.uri.replace("http://", "http://alice:hunter2secret@")
    c = client(uri)
    exp = c.get_experiment_by_name("h22-view-run") or c.get_experiment(c.create_experiment("h22-view-run"))
    run = c.create_run(exp.experiment_id)
    c.set_terminated(run.info.run_id)  # MLflow prints its "View run" line here
    out = capfd.readouterr()
    assert "hunter2secret" not in out.out + out.err  # before: "🏃 View run … at: http://alice:hunter2secret@…"


def test_the_redactor_keeps_an_s3_errors_words():
    from mpa.redact import is_secret_key, redact_text

    msg = ("cannot read s3://b/x: the object server at http://h:8333 rejected the credentials "
           "(SignatureDoesNotMatch: wrong AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY)")
    assert redact_text(msg) == msg  # before: "SignatureDoesNotMatch: ***"
    assert not is_secret_key("SignatureDoesNotMatch") and not is_secret_key("token_count")
    assert redact_text("signature=abc123def client_secret: s3cr3tvalue") == "signature=*** client_secret: ***"


# ============================================================================= S3 prefixes are folders
@pytest.fixture
def s3_with_siblings(s3_env):  # noqa: F811 - the fixture
    import boto3

    client = boto3.client("s3", endpoint_url=s3_env.endpoint, region_name="us-east-1",
                          aws_access_key_id=s3_env.access_key, aws_secret_access_key=s3_env.secret_key)
    bucket = "h22-siblings"
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=bucket)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    for key in ("imgs/a.png", "imgs/sub/b.png", "imgs_test/c.png", "imgs-heldout.png"):
        client.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
    return bucket


def test_an_s3_image_prefix_does_not_pull_in_its_siblings(s3_with_siblings):
    from mpa.data.images import list_image_files

    want = [f"s3://{s3_with_siblings}/imgs/a.png", f"s3://{s3_with_siblings}/imgs/sub/b.png"]
    assert list_image_files(f"s3://{s3_with_siblings}/imgs") == want  # before: + imgs_test/c.png, imgs-heldout.png
    assert list_image_files(f"s3://{s3_with_siblings}/imgs/") == want
    assert len(list_image_files(f"s3://{s3_with_siblings}")) == 4  # the bucket root lists everything


# ============================================================================= one image decoder
def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_the_decoder_shows_what_a_viewer_shows():
    import numpy as np

    from mpa.data.images import decode_image

    px = lambda data: tuple(np.asarray(decode_image(data))[1, 1])  # noqa: E731
    text = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    text.putpixel((2, 2), (0, 0, 0, 255))
    dec = np.asarray(decode_image(_png(text)))
    assert tuple(dec[1, 1]) == (255, 255, 255) and tuple(dec[2, 2]) == (0, 0, 0)  # before: all black
    assert px(_png(Image.new("LA", (4, 4), (0, 0)))) == (255, 255, 255)
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    assert px(_png(pal, transparency=0)) == (255, 255, 255)  # a palette's transparent colour
    grey16 = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))
    assert px(_png(grey16)) == (128, 128, 128)  # before: (255, 255, 255), clipped
    photo = Image.new("RGB", (20, 10), (10, 20, 30))
    exif = photo.getexif()
    exif[0x0112] = 6  # stored sideways: turn 90°
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue()).size == (10, 20)  # before: (20, 10)


def test_plain_rgb_images_decode_exactly_as_before_so_the_demo_is_unchanged(tmp_path):
    import numpy as np

    from mpa.data.images import load_image
    from mpa.toyworld.data import make_unlabeled

    make_unlabeled(tmp_path / "u", 6, seed=0)
    for p in sorted((tmp_path / "u" / "images").iterdir()):
        with Image.open(p) as raw:
            assert raw.mode == "RGB"
            old = np.asarray(raw.convert("RGB"))
        assert np.array_equal(np.asarray(load_image(str(p)).image), old)


def test_oversized_images_are_refused_in_one_line_before_decoding(tmp_path, monkeypatch):
    from mpa.data import images
    from mpa.data.images import UnreadableImage, decode_image, load_image

    big = tmp_path / "big.png"
    with open(big, "wb") as fh:  # a sparse 300 MB file: nothing is read
        fh.truncate(300 << 20)
    with pytest.raises(UnreadableImage, match=r"image too large: .*big\.png is 300\.0 MB"):
        load_image(str(big))  # before: read whole (an 8 GB file: MemoryError)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 10_000)
    wide = _png(Image.new("RGB", (200, 200)))
    with pytest.raises(UnreadableImage, match="200x200 = 0.0 megapixels, above"):
        decode_image(wide, "wide.png", max_pixels=images.MAX_IMAGE_PIXELS)


# ============================================================================= encodings
def test_a_torn_last_line_cut_inside_a_utf8_character_is_dropped(tmp_path):
    from mpa.records import JsonlLog

    path = tmp_path / "annotations.jsonl"
    whole = json.dumps(_record(0), ensure_ascii=False) + "\n"
    torn = json.dumps(_record(1, answer="日本語"), ensure_ascii=False).encode()
    cut = torn[: torn.index("本".encode()) + 1]  # inside the 3-byte character
    path.write_bytes(whole.encode() + cut)
    with JsonlLog(path) as log:  # before: UnicodeDecodeError on every rerun, no file named
        assert [r["id"] for r in log.records] == ["r0"]
    assert path.read_text(encoding="utf-8") == whole


def test_a_bad_byte_mid_file_names_the_file_and_line(tmp_path):
    from mpa.records import Annotation, JsonlLog, RecordError, read_jsonl, read_records

    path = tmp_path / "annotations.jsonl"
    path.write_bytes(b"".join(json.dumps(_record(i)).encode() + b"\n" for i in range(2))
                     + b'{"id": "r9", "answer": "\xff"}\n' + json.dumps(_record(3)).encode() + b"\n")
    for read in (lambda: list(read_jsonl(path)), lambda: read_records(path, Annotation)):
        with pytest.raises(RecordError, match=r"annotations\.jsonl:3: not UTF-8 text \(byte 0xff"):
            read()
    with pytest.raises(RecordError, match=r"annotations\.jsonl:3: corrupt record"):
        JsonlLog(path)


def test_an_image_with_a_non_utf8_file_name_is_skipped_with_a_log_line(tmp_path, caplog):
    from mpa.data.images import list_image_files

    root = tmp_path / "imgs"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "good.png")
    with open(os.path.join(os.fsencode(root), b"caf\xe9.png"), "wb") as fh:  # Latin-1 "café"
        fh.write((root / "good.png").read_bytes())
    with caplog.at_level(logging.WARNING):
        assert list_image_files(str(root)) == [str(root / "good.png")]
    assert "not UTF-8" in caplog.text and "caf\\xe9.png" in caplog.text


# ============================================================================= settings
BASE = {"teacher": {"model": "t"}, "student": {"model": "s"}, "data": {"images": "imgs"}}


@pytest.mark.parametrize(("override", "where"), [
    ({"train": {"learning_rate": float("inf")}}, "train.learning_rate"),
    ({"train": {"epochs": float("inf")}}, "train.epochs"),
    ({"annotate": {"temperature": float("nan")}}, "annotate.temperature"),
    ({"teacher": {"model": "t", "options": {"scale": [1.0, float("-inf")]}}}, "options.scale[1]"),
])
def test_non_finite_numbers_are_refused_everywhere(override, where):
    from mpa.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"finite") as err:
        parse_config({**BASE, **override})
    assert where in str(err.value)


def test_a_yaml_alias_bomb_is_refused(tmp_path):
    layers = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        layers.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(yaml.safe_dump(BASE) + "teacher_extra:\n" + textwrap.indent("\n".join(layers), "  ") + "\n")
    from mpa.config import ConfigError, load_config, parse_set_pairs

    with pytest.raises(ConfigError, match="alias bomb"):
        load_config(bomb)  # before: 9^9 values for whoever walked it (validation, MLflow params)
    with pytest.raises(ConfigError, match="alias bomb"):
        parse_set_pairs(["teacher.options={" + ", ".join(layers) + "}"])


@pytest.mark.parametrize("flag", ["--images", "--out"])
def test_an_empty_images_or_out_is_refused(tmp_path, flag):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "data": {"images": str(tmp_path)}, "out": str(tmp_path / "run")}))
    # before: "" meant the current directory (annotated it / wrote into it)
    _one_line_error(_mpa("annotate", "--config", str(cfg), flag, ""), "is empty")


# ============================================================================= silent wrong results
def test_a_benchmark_with_a_duplicated_question_id_is_refused(tmp_path):
    from mpa.data.benchmarks import load_benchmark

    ann = tmp_path / "textvqa.json"
    ann.write_text(json.dumps({"data": [
        {"question_id": 7, "question": "a?", "image_id": "x", "answers": ["a"] * 10},
        {"question_id": 8, "question": "b?", "image_id": "y", "answers": ["b"] * 10},
        {"question_id": 7, "question": "c?", "image_id": "z", "answers": ["c"] * 10}]}))
    with pytest.raises(ValueError, match=r"question id '7' appears 2 times"):
        load_benchmark("textvqa", str(ann))  # before: both scored with one prediction


def test_a_record_claiming_parse_ok_without_a_question_does_not_count(tmp_path):
    from mpa.records import Annotation, read_records

    path = tmp_path / "annotations.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        _record(0), _record(1, question=None), _record(2, answer="  ")]))
    recs = read_records(path, Annotation)
    assert [r.parse_ok for r in recs] == [True, False, False]  # before: all three counted into K
    assert recs[1].error == "parse_ok without a question and an answer"


def test_teacher_text_that_looks_like_a_formula_is_escaped_in_the_study_sheet(tmp_path):
    import csv

    from mpa.human_study import sample_sheet

    run = tmp_path / "run"
    (run / "pi").mkdir(parents=True)
    recs = [_record(i, question=q, answer=a) for i, (q, a) in enumerate([
        ("=HYPERLINK(\"http://x\",\"y\")", "+1"), ("@SUM(A1)?", "-2"), ("plain?", "red"), ("\tx?", "=1")])]
    (run / "annotations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (run / "pi" / "parity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    sheet = tmp_path / "sheet.csv"
    sample_sheet(run, 4, sheet)
    rows = list(csv.DictReader(sheet.open(encoding="utf-8")))
    cells = [r[c] for r in rows for c in ("question", "answer")]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t")], cells  # before: raw formulas
    assert "plain?" in cells and "'=HYPERLINK(\"http://x\",\"y\")" in cells


# ============================================================================= tracebacks → one line
def test_samples_with_non_string_fields_name_the_file_line_and_field(tmp_path):
    from mpa.records import RecordError, read_training_samples

    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({"image": "a.png", "question": "q?", "answer": "a"}) + "\n"
                    + json.dumps({"image": "b.png", "question": 5, "answer": ["x"]}) + "\n")
    with pytest.raises(RecordError, match=r"samples\.jsonl:2: question: Input should be a valid string"):
        read_training_samples(path)


def test_a_pickled_checkpoint_is_refused_in_one_line_and_never_run(tmp_path):
    import pickle

    ckpt = tmp_path / "ckpt"
    shutil.copytree(STUDENT_CHECKPOINT, ckpt)
    for f in ckpt.glob("*.safetensors"):
        f.unlink()
    proof = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {proof}",))

    with open(ckpt / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"w": Payload()}, fh)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (84, 84)).save(images / "a.png")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "task": {"name": "toyvqa"}, "teacher": {"model": str(ckpt), "device": "cpu"},
        "student": {"model": str(STUDENT_CHECKPOINT), "device": "cpu"}, "data": {"images": str(images)},
        "tracking": {"enabled": False}, "out": str(tmp_path / "run")}))
    # before: a 64-line UnpicklingError traceback
    _one_line_error(_mpa("annotate", "--config", str(cfg)), "pickle", "safetensors")
    assert not proof.exists()


def test_promote_with_a_quote_in_the_name_is_one_line(servers_env):  # noqa: F811 - the fixture
    res = _mpa("promote", "--name", "it's", "--version", "1", env={"MLFLOW_TRACKING_URI": servers_env.uri})
    _one_line_error(res)

"""The human study (Table 4): a blinded sheet from a run, scored from filled sheets with hand-computed kappas."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mpa.human_study import (
    MEASURES,
    StudyError,
    cohen_kappa,
    fleiss_kappa,
    percent_agreement,
    sample_sheet,
    score_sheets,
)

COLUMNS = ["item_id", "image", "question", "answer", *MEASURES]


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run directory as `mpa annotate` + `mpa identify` leave it: 30 parsed pseudo-labels, 4 failures, 8 kept."""
    run = tmp_path / "run"
    (run / "pi").mkdir(parents=True)
    (tmp_path / "img").mkdir()
    anns = []
    for i in range(34):
        img = tmp_path / "img" / f"{i:03d}.png"
        Image.new("RGB", (64, 40), (i * 7 % 255, 90, 200)).save(img)
        parsed = i < 30
        anns.append({"id": f"sha{i:03d}-0", "image": str(img), "image_sha256": f"sha{i:03d}", "task": "textvqa",
                     "prompt_version": "v1", "teacher": "t", "k": 0,
                     "question": f"What is written on sign {i}?" if parsed else None,
                     "answer": f"word {i}" if parsed else None, "raw": "", "parse_ok": parsed,
                     "error": None if parsed else "parse failure"})
    (run / "annotations.jsonl").write_text("".join(json.dumps(a) + "\n" for a in anns))
    kept = [{**anns[i], "teacher_answer": anns[i]["answer"], "student_answer": "x", "teacher_match": True,
             "student_match": False, "kept": True, "reason": "parity"} for i in range(0, 24, 3)]
    (run / "pi" / "parity.jsonl").write_text("".join(json.dumps(k) + "\n" for k in kept))
    return run


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _fill(sheet: Path, out: Path, ratings: dict[str, dict[str, int]]) -> Path:
    rows = _rows(sheet)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({**r, **{c: str(v) for c, v in ratings[r["item_id"]].items()}})
    return out


def test_sample_is_blinded_balanced_and_reproducible(run_dir, tmp_path):
    info = sample_sheet(run_dir, 10, tmp_path / "study" / "sheet.csv", seed=3)
    sheet, html, key_path = Path(info["sheet"]), Path(info["html"]), Path(info["key"])
    assert key_path.name == "sheet.key.json" and html.name == "sheet.html"
    rows = _rows(sheet)
    assert list(rows[0]) == COLUMNS
    assert [r["item_id"] for r in rows] == [f"H{i:04d}" for i in range(1, 11)]
    assert all(r[c] == "" for r in rows for c in MEASURES)  # empty rating columns
    key = json.loads(key_path.read_text())["items"]
    sets = [key[r["item_id"]]["set"] for r in rows]
    assert sets.count("before") == sets.count("after") == 5
    assert sets != ["before"] * 5 + ["after"] * 5  # shuffled together
    # nothing in the sheet or the HTML tells the sets apart
    text = sheet.read_text() + html.read_text()
    assert "before" not in text and "after" not in text and "parity" not in text
    parity = {json.loads(line)["id"] for line in (run_dir / "pi" / "parity.jsonl").read_text().splitlines()}
    for r in rows:
        k = key[r["item_id"]]
        assert (k["record_id"] in parity) == (k["set"] == "after")
        assert k["question"] == r["question"] and k["answer"] == r["answer"]
    assert len({key[r["item_id"]]["record_id"] for r in rows}) == 10  # no item twice
    # the HTML embeds every image as a thumbnail, with id, question and answer
    page = html.read_text()
    assert page.count("data:image/jpeg;base64,") == 10
    for r in rows:
        assert r["item_id"] in page and r["question"] in page and r["answer"] in page
    assert info["unreadable_images"] == 0
    again = sample_sheet(run_dir, 10, tmp_path / "again.csv", seed=3)
    assert Path(again["sheet"]).read_text() == sheet.read_text()


def test_sample_errors(run_dir, tmp_path):
    with pytest.raises(StudyError, match="even number"):
        sample_sheet(run_dir, 7, tmp_path / "s.csv")
    with pytest.raises(StudyError, match="parity set has 8 samples, fewer than n/2 = 10; use --n 16"):
        sample_sheet(run_dir, 20, tmp_path / "s.csv")
    with pytest.raises(StudyError, match=r"\.csv"):
        sample_sheet(run_dir, 4, tmp_path / "s.xlsx")
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        sample_sheet(tmp_path / "nope", 4, tmp_path / "s.csv")
    (run_dir / "pi" / "parity.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="parity set"):
        sample_sheet(run_dir, 4, tmp_path / "s.csv")


def test_round_trip_scores_sets_apart(run_dir, tmp_path):
    info = sample_sheet(run_dir, 10, tmp_path / "sheet.csv", seed=1)
    key = json.loads(Path(info["key"]).read_text())["items"]
    # both raters: after-PI items all correct, before-PI items all wrong; human_like always 1
    ratings = {i: {"answer_correct": int(k["set"] == "after"), "answerable": int(k["set"] == "after"),
                   "task_relevant": 1, "human_like": 1} for i, k in key.items()}
    a = _fill(Path(info["sheet"]), tmp_path / "a.csv", ratings)
    b = _fill(Path(info["sheet"]), tmp_path / "b.csv", ratings)
    out = score_sheets([a, b], info["key"])
    m = out["measures"]
    assert m["answer correctness"]["before"] == 0.0 and m["answer correctness"]["after"] == 1.0
    assert m["answer correctness"]["delta"] == 1.0
    assert out["agreement"]["answer correctness"] == {"percent_agreement": 1.0, "kappa": 1.0, "kappa_kind": "cohen"}
    # every rating the same value: chance agreement 1, kappa undefined
    assert out["agreement"]["human-likeness"]["kappa"] is None
    assert out["agreement"]["human-likeness"]["percent_agreement"] == 1.0
    assert out["items"] == {"before": 5, "after": 5} and out["n_raters"] == 2


# --- hand-computed agreement -------------------------------------------------------------------

A = [1, 1, 0, 1, 0, 1]
B = [1, 0, 0, 1, 0, 1]
C = [1, 1, 1, 1, 0, 0]


def test_cohen_kappa_by_hand():
    # p_o = 5/6; p_e = (4/6)(3/6) + (2/6)(3/6) = 1/2; kappa = (5/6 - 1/2) / (1/2) = 2/3
    assert cohen_kappa(A, B) == pytest.approx(2 / 3)
    assert percent_agreement([list(t) for t in zip(A, B, strict=True)]) == pytest.approx(5 / 6)
    assert cohen_kappa([1, 1], [1, 1]) is None


def test_fleiss_kappa_by_hand():
    table = [list(t) for t in zip(A, B, C, strict=True)]
    # P_i = 1, 1/3, 1/3, 1, 1, 1/3 -> P = 2/3; p(1) = 11/18, p(0) = 7/18 -> P_e = 170/324
    # kappa = (216/324 - 170/324) / (154/324) = 46/154
    assert fleiss_kappa(table) == pytest.approx(46 / 154)
    assert percent_agreement(table) == pytest.approx(2 / 3)
    # with two raters Fleiss' kappa is not Cohen's (it pools the raters' marginals): 1 - (1/6) / (1 - p_e)
    assert fleiss_kappa([list(t) for t in zip(A, B, strict=True)]) == pytest.approx(1 - (1 / 6) / (1 - (49 + 25) / 144))


def _key(tmp_path: Path) -> Path:
    items = {f"H{i:04d}": {"set": "before" if i <= 3 else "after", "record_id": f"r{i}",
                           "question": f"question {i}?", "answer": f"answer {i}"} for i in range(1, 7)}
    path = tmp_path / "sheet.key.json"
    path.write_text(json.dumps({"run": "x", "seed": 0, "n": 6, "items": items}))
    return path


def _sheet(tmp_path: Path, name: str, correct: list[int], *, edit=None) -> Path:
    path = tmp_path / name
    rows = [{"item_id": f"H{i:04d}", "image": f"/img/{i}.png", "question": f"question {i}?", "answer": f"answer {i}",
             "answer_correct": str(correct[i - 1]), "answerable": "1", "task_relevant": str(i % 2),
             "human_like": "1"} for i in range(1, 7)]
    if edit:
        rows = edit(rows)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        fields = list(rows[0]) if rows else COLUMNS
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def test_score_two_and_three_raters_by_hand(tmp_path):
    key = _key(tmp_path)
    a, b, c = _sheet(tmp_path, "a.csv", A), _sheet(tmp_path, "b.csv", B), _sheet(tmp_path, "c.csv", C)
    two = score_sheets([a, b], key)
    ac = two["measures"]["answer correctness"]
    # before = items 1-3: A 1,1,0  B 1,0,0 -> 3/6; after = items 4-6: A 1,0,1  B 1,0,1 -> 4/6
    assert ac["before"] == pytest.approx(0.5) and ac["after"] == pytest.approx(4 / 6)
    assert ac["before_per_rater"] == {str(a): pytest.approx(2 / 3), str(b): pytest.approx(1 / 3)}
    assert two["agreement"]["answer correctness"]["kappa"] == pytest.approx(2 / 3)
    assert two["agreement"]["answer correctness"]["percent_agreement"] == pytest.approx(5 / 6)
    assert two["measures"]["task relevance"]["before"] == pytest.approx(2 / 3)  # items 1, 3 of 1-3
    three = score_sheets([a, b, c], key)
    agree = three["agreement"]["answer correctness"]
    assert agree["kappa_kind"] == "fleiss" and agree["kappa"] == pytest.approx(46 / 154)
    assert agree["percent_agreement"] == pytest.approx(2 / 3)
    one = score_sheets([a], key)
    assert one["agreement"] == {} and one["measures"]["answer correctness"]["after"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: [{k: v for k, v in r.items() if k != "answerable"} for r in rows],
         r"bad\.csv:1: missing column\(s\) answerable"),
        (lambda rows: [{**r, "answer_correct": "2"} if r["item_id"] == "H0003" else r for r in rows],
         r"bad\.csv:4: column answer_correct of item H0003 is '2'; write 0 or 1"),
        (lambda rows: [{**r, "human_like": ""} if r["item_id"] == "H0005" else r for r in rows],
         r"bad\.csv:6: column human_like of item H0005 is empty"),
        (lambda rows: [{**r, "answer_correct": "yes"} if r["item_id"] == "H0001" else r for r in rows],
         r"bad\.csv:2: column answer_correct of item H0001 is 'yes'"),
        (lambda rows: rows[:-1], r"bad\.csv: 1 item\(s\) of the key are missing: H0006"),
        (lambda rows: [*rows, {**rows[0], "item_id": "H0099"}], r"bad\.csv:8: item 'H0099' is not in the key"),
        (lambda rows: [*rows, rows[0]], r"bad\.csv:8: item H0001 appears twice"),
        (lambda rows: [{**r, "question": "another?"} if r["item_id"] == "H0002" else r for r in rows],
         r"bad\.csv:3: item H0002's question differs from the key"),
    ],
)
def test_score_errors_name_file_and_line(tmp_path, edit, message):
    key = _key(tmp_path)
    good = _sheet(tmp_path, "good.csv", A)
    bad = _sheet(tmp_path, "bad.csv", B, edit=edit)
    with pytest.raises(StudyError, match=message):
        score_sheets([good, bad], key)


def test_score_input_errors(tmp_path):
    key = _key(tmp_path)
    a = _sheet(tmp_path, "a.csv", A)
    with pytest.raises(StudyError, match="same sheet is given twice"):
        score_sheets([a, a], key)
    with pytest.raises(FileNotFoundError, match="key file not found"):
        score_sheets([a], tmp_path / "none.key.json")
    with pytest.raises(FileNotFoundError, match="sheet not found"):
        score_sheets([a, tmp_path / "missing.csv"], key)
    (tmp_path / "broken.key.json").write_text('{"items": {"H0001": {"set": "during"}}}')
    with pytest.raises(StudyError, match="set 'during'"):
        score_sheets([a], tmp_path / "broken.key.json")


def test_cli_sample_and_score(run_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    mpa = [sys.executable, "-m", "mpa", "human-study"]
    res = subprocess.run([*mpa, "sample", "--run", str(run_dir), "--n", "4", "--out", str(tmp_path / "s.csv")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    key = json.loads((tmp_path / "s.key.json").read_text())["items"]
    ratings = {i: dict.fromkeys(MEASURES, 1) for i in key}
    filled = _fill(tmp_path / "s.csv", tmp_path / "rater1.csv", ratings)
    res = subprocess.run([*mpa, "score", str(filled), "--key", str(tmp_path / "s.key.json")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["measures"]["answerability"]["after"] == 1.0
    bad = tmp_path / "rater2.csv"
    bad.write_text(filled.read_text().replace(",1,1,1,1", ",1,1,x,1", 1))
    res = subprocess.run([*mpa, "score", str(filled), str(bad), "--key", str(tmp_path / "s.key.json")],
                         capture_output=True, text=True, env=env, timeout=120)
    err = " ".join(res.stderr.split())  # the console wraps long lines
    assert res.returncode == 2 and "rater2.csv:2: column task_relevant" in err and "Traceback" not in err


# --- the paper's human-likeness score: post-PI items mixed with real human questions ----------------

HUMAN_QUESTIONS = Path(__file__).parent / "fixtures" / "benchmarks" / "textvqa" / "TextVQA_0.5.1_val.json"


def _fill_likeness(sheet: Path, out: Path, ratings: dict[str, int]) -> Path:
    rows = _rows(sheet)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["item_id", "image", "question", "answer", "human_written"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "human_written": str(ratings[r["item_id"]])})
    return out


def test_likeness_sheet_mixes_post_pi_items_with_human_questions_blind(run_dir, tmp_path):
    from mpa.human_study import likeness_sheet

    summary = likeness_sheet(run_dir, "textvqa", str(HUMAN_QUESTIONS), tmp_path / "l.csv", 8, seed=3)
    assert (summary["mpa"], summary["human"]) == (4, 4)
    rows = _rows(tmp_path / "l.csv")
    assert list(rows[0]) == ["item_id", "image", "question", "answer", "human_written"]
    assert all(r["human_written"] == "" for r in rows)
    key = json.loads((tmp_path / "l.key.json").read_text())["items"]
    sources = [key[r["item_id"]]["source"] for r in rows]
    assert sorted(sources) == ["human"] * 4 + ["mpa"] * 4 and sources != sorted(sources)  # shuffled together
    human_qs = {e["question"] for e in json.loads(HUMAN_QUESTIONS.read_text())["data"]}
    parity_qs = {json.loads(x)["question"] for x in (run_dir / "pi" / "parity.jsonl").read_text().splitlines()}
    for r in rows:
        assert r["question"] in (human_qs if key[r["item_id"]]["source"] == "human" else parity_qs)
    assert "human_written" in (tmp_path / "l.html").read_text() and "source" not in rows[0]
    nokia = [r for r in rows if r["question"] == "what brand is the phone?"]
    assert nokia and nokia[0]["answer"] == "nokia"  # the most frequent answer beside a human question
    again = likeness_sheet(run_dir, "textvqa", str(HUMAN_QUESTIONS), tmp_path / "m.csv", 8, seed=3)
    assert again["n"] == 8 and (tmp_path / "m.csv").read_text() == (tmp_path / "l.csv").read_text()


def test_likeness_score_is_the_share_of_post_pi_items_taken_for_human(run_dir, tmp_path):
    from mpa.human_study import likeness_sheet, score_likeness

    likeness_sheet(run_dir, "textvqa", str(HUMAN_QUESTIONS), tmp_path / "l.csv", 8, seed=1)
    key = json.loads((tmp_path / "l.key.json").read_text())["items"]
    mpa_ids = sorted(i for i in key if key[i]["source"] == "mpa")
    human_ids = sorted(i for i in key if key[i]["source"] == "human")
    # rater 1 takes 3 of the 4 post-PI items and all 4 human questions for human-written
    r1 = {**{i: 1 for i in mpa_ids[:3]}, mpa_ids[3]: 0, **dict.fromkeys(human_ids, 1)}
    # rater 2: 1 of 4 post-PI items, 3 of 4 human questions
    r2 = {mpa_ids[0]: 1, **dict.fromkeys(mpa_ids[1:], 0), **dict.fromkeys(human_ids[:3], 1), human_ids[3]: 0}
    a = _fill_likeness(tmp_path / "l.csv", tmp_path / "r1.csv", r1)
    b = _fill_likeness(tmp_path / "l.csv", tmp_path / "r2.csv", r2)
    result = score_likeness([a, b], tmp_path / "l.key.json")
    assert result["human_likeness"] == pytest.approx(4 / 8)  # (3 + 1) of 2 x 4 post-PI ratings
    assert result["human_likeness_per_rater"] == {str(a): 0.75, str(b): 0.25}
    assert result["human_questions_taken_for_human"] == pytest.approx(7 / 8)
    assert result["items"] == {"mpa": 4, "human": 4}
    # agreement over the 8 items: they differ on mpa_ids[1], mpa_ids[2] and human_ids[3] -> 5/8
    assert result["agreement"]["percent_agreement"] == pytest.approx(5 / 8)
    # Cohen by hand: rater 1 says 1 on 7 items, rater 2 on 4: p_e = 7/8*4/8 + 1/8*4/8 = 0.5; (0.625-0.5)/0.5
    assert result["agreement"]["kappa"] == pytest.approx(0.25) and result["agreement"]["kappa_kind"] == "cohen"


def test_likeness_errors_are_named(run_dir, tmp_path):
    from mpa.human_study import likeness_sheet, score_likeness

    with pytest.raises(StudyError, match="has 4 items, fewer than n/2 = 5"):
        likeness_sheet(run_dir, "textvqa", str(HUMAN_QUESTIONS), tmp_path / "l.csv", 10)
    likeness_sheet(run_dir, "textvqa", str(HUMAN_QUESTIONS), tmp_path / "l.csv", 4)
    rows = _rows(tmp_path / "l.csv")
    bad = _fill_likeness(tmp_path / "l.csv", tmp_path / "bad.csv", {r["item_id"]: 1 for r in rows})
    bad.write_text(bad.read_text().replace(",1\n", ",maybe\n", 1))
    with pytest.raises(StudyError, match="bad.csv:2: column human_written of item L0001 is 'maybe'"):
        score_likeness([bad], tmp_path / "l.key.json")
    sample_sheet(run_dir, 4, tmp_path / "s.csv")
    with pytest.raises(StudyError, match="not a human-likeness key file"):
        score_likeness([bad], tmp_path / "s.key.json")


def test_cli_likeness_sample_and_score(run_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    mpa = [sys.executable, "-m", "mpa", "human-study"]
    res = subprocess.run([*mpa, "likeness-sample", "--run", str(run_dir), "--benchmark", "textvqa", "--annotations",
                          str(HUMAN_QUESTIONS), "--n", "4", "--out", str(tmp_path / "l.csv")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    key = json.loads((tmp_path / "l.key.json").read_text())["items"]
    filled = _fill_likeness(tmp_path / "l.csv", tmp_path / "r.csv", {i: int(key[i]["source"] == "human") for i in key})
    res = subprocess.run([*mpa, "likeness-score", str(filled), "--key", str(tmp_path / "l.key.json")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["human_likeness"] == 0.0 and out["human_questions_taken_for_human"] == 1.0

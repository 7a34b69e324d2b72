"""Hand-computed checks of the official metrics in mpa.metrics."""

from __future__ import annotations

import pytest

from mpa.metrics import (
    CONTRACTIONS,
    MATCH_RULES,
    anls,
    contains,
    contains_accuracy,
    contains_normalize,
    exact_match,
    levenshtein,
    match,
    most_frequent_answer,
    normalize_answer,
    relaxed_accuracy,
    score_sample,
    vqa_accuracy,
)

# ------------------------------------------------------------------------------------------------
# normalize_answer
# ------------------------------------------------------------------------------------------------


def test_normalize_lowercase_strip_whitespace():
    assert normalize_answer("  Hello\tWorld\n") == "hello world"
    assert normalize_answer("") == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("two", "2"),
        ("Ten", "10"),
        ("zero", "0"),
        ("none", "0"),  # official map has none -> 0
        ("eleven", "eleven"),  # only zero..ten are mapped
        ("two dogs", "2 dogs"),
    ],
)
def test_normalize_number_words(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a dog", "dog"),
        ("An apple", "apple"),
        ("the end of the road", "end of road"),
        ("theater", "theater"),  # only whole words are articles
    ],
)
def test_normalize_articles(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("dont", "don't"),
        ("isnt", "isn't"),
        ("wont", "won't"),
        ("yall", "y'all"),
        ("i dont know", "i don't know"),
        ("oclock", "o'clock"),
    ],
)
def test_normalize_contractions(raw, expected):
    assert normalize_answer(raw) == expected


def test_contractions_map_is_the_full_official_one():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["somebody'd"] == "somebodyd"  # official quirk, kept as-is


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # no punct char touches a space -> each one becomes a space, then split/join collapses it
        ("coca-cola", "coca cola"),
        ("and/or", "and or"),
        ("(hi)", "hi"),  # "(" -> " ", ")" -> " ", stripped by split/join
        # "-" is followed by a space somewhere -> every "-" is removed instead
        ("ab- cd-ef", "ab cdef"),
        # word_tokenize deletes commas and "?" before punctuation processing
        ("1,000", "1000"),
        ("red, white", "red white"),
        ("what?", "what"),
        ("yes!", "yes"),
        # "'s" is split off by word_tokenize
        ("man's hat", "man 's hat"),
    ],
)
def test_normalize_punctuation(raw, expected):
    assert normalize_answer(raw) == expected


def test_normalize_period_regex_follows_official_typo():
    # Official regex (?!<=\d)(\.)(?!\d) == \.(?!\d): a period is deleted unless a digit FOLLOWS it.
    assert normalize_answer("3.") == "3"  # the intended (?<!\d) look-behind would have kept "3."
    assert normalize_answer("a.b") == "ab"
    assert normalize_answer("1.5") == "1.5"  # decimal point between digits kept
    assert normalize_answer(".5") == ".5"  # followed by a digit -> kept
    assert normalize_answer("e.g. this") == "eg this"
    # re.UNICODE (32) is passed as `count` in the official call: only 32 periods are removed
    assert normalize_answer("." * 40) == "." * 8


# ------------------------------------------------------------------------------------------------
# vqa_accuracy
# ------------------------------------------------------------------------------------------------


def test_vqa_all_ten_match():
    # every acc_i = min(1, 9/3) = 1
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0


def test_vqa_two_of_ten():
    # 2 matching GTs: leaving out a matching one -> 1 other match -> 1/3 (2 times);
    # leaving out a non-matching one -> 2 matches -> 2/3 (8 times). (2*(1/3) + 8*(2/3))/10 = 0.6
    assert vqa_accuracy("yes", ["yes"] * 2 + ["no"] * 8) == pytest.approx(0.6)


def test_vqa_one_of_ten():
    # matching left out -> 0 (1 time); others -> 1/3 (9 times). 9*(1/3)/10 = 0.3
    assert vqa_accuracy("cat", ["cat"] + ["dog"] * 9) == pytest.approx(0.3)


def test_vqa_three_of_ten():
    # matching left out -> 2/3 (3 times); non-matching -> min(1, 3/3) = 1 (7 times). (2 + 7)/10 = 0.9
    assert vqa_accuracy("cat", ["cat"] * 3 + ["dog"] * 7) == pytest.approx(0.9)


def test_vqa_four_of_ten_is_full_credit():
    # matching left out -> 3/3 = 1; non-matching -> min(1, 4/3) = 1. Mean = 1
    assert vqa_accuracy("cat", ["cat"] * 4 + ["dog"] * 6) == 1.0


def test_vqa_zero_matches():
    assert vqa_accuracy("bird", ["cat"] * 10) == 0.0


def test_vqa_normalizes_prediction_and_gt():
    # "Three." -> "3"; GT "three", "3", "the three" -> "3": 3 matches of 10 -> 0.9 (see above)
    gts = ["three", "3", "the three"] + ["4"] * 7
    assert vqa_accuracy("Three.", gts) == pytest.approx(0.9)
    # "Dont know" -> "don't know" == normalized "don't know" x2 -> 0.6
    assert vqa_accuracy("Dont know", ["don't know", "dont know"] + ["no"] * 8) == pytest.approx(0.6)


def test_vqa_other_lengths():
    # n == 1 -> normalized exact match
    assert vqa_accuracy("A Dog", ["dog"]) == 1.0
    assert vqa_accuracy("cat", ["dog"]) == 0.0
    # n == 5, 2 matching: 2*(1/3) + 3*(2/3) = 8/3; / 5 = 8/15
    assert vqa_accuracy("x", ["x", "x", "y", "y", "y"]) == pytest.approx(8 / 15)


def test_vqa_rejects_empty_or_str_gt():
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])
    with pytest.raises(TypeError):
        vqa_accuracy("x", "x")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# ANLS
# ------------------------------------------------------------------------------------------------


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0
    assert levenshtein("hello", "help") == 2


def test_anls_exact_and_case_whitespace():
    assert anls("Coca  Cola ", ["coca cola"]) == 1.0  # lowercased, trimmed, spaces collapsed


def test_anls_partial():
    # "stops" vs "stop": 1 edit / max(5, 4) = 0.2 -> 0.8
    assert anls("stops", ["STOP"]) == pytest.approx(0.8)
    # "help" vs "hello": 2 edits / 5 = 0.4 -> 0.6
    assert anls("help", ["hello"]) == pytest.approx(0.6)


def test_anls_threshold_boundary():
    # "13" vs "12": NL = 1/2 = 0.5 -> NL >= 0.5 -> 0
    assert anls("13", ["12"]) == 0.0
    # "abc" vs "abd": NL = 1/3 < 0.5 -> 2/3
    assert anls("abc", ["abd"]) == pytest.approx(2 / 3)
    # threshold is configurable: with 0.6, NL = 0.5 passes -> 0.5
    assert anls("13", ["12"], threshold=0.6) == pytest.approx(0.5)


def test_anls_max_over_answers_and_empty():
    # vs "stop": 0.8; vs "go": NL = 5/5 -> 0. Max = 0.8
    assert anls("stops", ["go", "stop"]) == pytest.approx(0.8)
    assert anls("", [""]) == 1.0
    assert anls("", ["abc"]) == 0.0


# ------------------------------------------------------------------------------------------------
# relaxed accuracy
# ------------------------------------------------------------------------------------------------


def test_relaxed_exactly_five_percent():
    # |105 - 100| / 100 = 0.05 <= 0.05 -> correct
    assert relaxed_accuracy("105", "100") == 1.0
    # |1.05 - 1| / 1 = 0.05 (0.050000000000000044 in binary) -> correct thanks to the slack
    assert relaxed_accuracy("1.05", "1") == 1.0
    # |1260 - 1200| / 1200 = 0.05, target with a thousands separator
    assert relaxed_accuracy("1260", "1,200") == 1.0
    # |106 - 100| / 100 = 0.06 -> wrong
    assert relaxed_accuracy("106", "100") == 0.0
    # |94.9 - 100| / 100 = 0.051 -> wrong
    assert relaxed_accuracy("94.9", "100") == 0.0


def test_relaxed_zero_target():
    assert relaxed_accuracy("0", "0") == 1.0
    assert relaxed_accuracy("0.0", "0") == 1.0  # numeric equality, not string
    assert relaxed_accuracy("0.001", "0") == 0.0


def test_relaxed_symbols():
    assert relaxed_accuracy("45%", "45") == 1.0  # % stripped (not divided by 100)
    assert relaxed_accuracy("$1,234.5", "1234.5") == 1.0
    assert relaxed_accuracy("-$5", "-5") == 1.0
    assert relaxed_accuracy("-5", "5") == 0.0  # |-5 - 5| / 5 = 2


def test_relaxed_strings():
    assert relaxed_accuracy(" Yes ", "yes") == 1.0
    assert relaxed_accuracy("No", "yes") == 0.0
    assert relaxed_accuracy("2019", "2019") == 1.0
    assert relaxed_accuracy("nan", "nan") == 1.0  # non-finite -> string comparison
    assert relaxed_accuracy("inf", "1e309") == 0.0


# ------------------------------------------------------------------------------------------------
# exact match, match rules, dispatch
# ------------------------------------------------------------------------------------------------


def test_exact_match():
    assert exact_match(" Paris ", "Paris") == 1.0
    assert exact_match("paris", "Paris") == 0.0


def test_match_rules():
    assert MATCH_RULES == ("exact", "vqa", "relaxed", "anls", "contains")
    assert match("exact", "Paris ", "Paris")
    assert not match("exact", "paris", "Paris")
    assert match("vqa", "Two dogs.", "2 dogs")
    assert not match("vqa", "two", "3")
    assert match("relaxed", "104", "100")
    assert not match("relaxed", "104", "100", tolerance=0.03)
    assert match("anls", "stops", "stop")  # anls 0.8 > 0
    assert not match("anls", "13", "12")  # NL = 0.5 -> anls 0
    assert match("anls", "13", "12", anls_threshold=0.51)  # NL 0.5 < 0.51


def test_match_unknown_rule():
    with pytest.raises(ValueError, match="exact, vqa, relaxed, anls, contains"):
        match("fuzzy", "a", "a")


def test_score_sample_dispatch():
    assert score_sample("vqa", "yes", ["yes"] * 2 + ["no"] * 8) == pytest.approx(0.6)
    assert score_sample("anls", "stops", ["STOP"]) == pytest.approx(0.8)
    assert score_sample("relaxed", "47", ["45", "999"]) == 1.0  # uses answers[0]: 2/45 = 0.044
    assert score_sample("exact", "b", ["a", "b"]) == 1.0  # max over answers
    assert score_sample("exact", "B", ["a", "b"]) == 0.0
    with pytest.raises(ValueError, match="unknown metric"):
        score_sample("bleu", "a", ["a"])


@pytest.mark.parametrize("fn", [lambda: anls("x", ["abc", "x"]), lambda: vqa_accuracy("x", ["x", "y"])])
def test_scores_in_unit_interval(fn):
    assert 0.0 <= fn() <= 1.0


# --- the MPA authors' substring rule (`contains`): every expected value below is worked by hand ---


@pytest.mark.parametrize(
    ("raw", "processed"),
    [
        ("Air France", "airfrance"),  # lower-case, whitespace gone
        ("  G-ATCO\t", "gatco"),  # "-" is \W
        ("H.G. ARMIAH", "hgarmiah"),
        ("it's 3:45 p.m.!", "its345pm"),
        ("snake_case", "snake_case"),  # "_" is a word character
        ("Café  Noël", "cafénoël"),  # Unicode letters are word characters
        ("?!", ""),
        (None, ""),
    ],
)
def test_contains_normalize(raw, processed):
    assert contains_normalize(raw) == processed


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("Air France", "air france", True),  # equal after processing
        ("The airline is Air France.", "Air France", True),  # verbose prediction still contains it
        ("airfrance", "Air-France", True),  # spaces and hyphens vanish on both sides
        ("10", "1", True),  # "1" is a substring of "10": the rule's known leniency
        ("1", "10", False),
        ("Nokia", "Nokia 3310", False),  # the reference must be inside the prediction, not the reverse
        ("anything", "?", True),  # a reference of only punctuation processes to "" and matches all
        ("", "a", False),
    ],
)
def test_contains_rule(prediction, reference, expected):
    assert contains(prediction, reference) is expected
    assert match("contains", prediction, reference) is expected


def test_contains_accuracy_uses_the_most_frequent_answer():
    answers = ["nokia", "Nokia", "nokia", "samsung", "samsung", "samsung", "samsung", "lg", "lg", "nokia"]
    # raw counts: samsung 4, nokia 3, lg 2, Nokia 1 -> "samsung" (raw strings: "Nokia" is not "nokia")
    assert most_frequent_answer(answers) == "samsung"
    assert contains_accuracy("It is a Samsung phone", answers) == 1.0
    assert contains_accuracy("nokia", answers) == 0.0  # right by VQA accuracy (3/3 -> 1.0), wrong here
    assert vqa_accuracy("nokia", answers) == 1.0
    # ties go to the answer listed first
    assert most_frequent_answer(["b", "a", "a", "b"]) == "b"
    assert score_sample("contains", "the answer is b", ["b", "a", "a", "b"]) == 1.0
    with pytest.raises(ValueError):
        most_frequent_answer([])


def _bench_samples():
    from mpa.data.benchmarks import BenchmarkSample

    return [
        BenchmarkSample("1", "q1", "i1.png", ["air france"] * 6 + ["france"] * 4),
        BenchmarkSample("2", "q2", "i2.png", ["yes"] * 10),
        BenchmarkSample("3", "q3", "i3.png", ["2011"] * 3 + ["2012"] * 7),
        BenchmarkSample("4", "q4", "i4.png", ["stop"] * 10),
    ]


def test_score_predictions_reports_contains_beside_the_official_score():
    from mpa.data.benchmarks import score_predictions

    preds = {"1": "Air France", "2": "Yes, it is.", "3": "2011"}  # "4" missing: 0 under both
    # VQA accuracy: 1 -> 1.0 (6 matches), 2 -> "yes it is" matches none -> 0, 3 -> 3 matches -> 0.9
    #   (each of the 3 "2011" sees 2 others: 2/3; each of the 7 "2012" sees 3: 1) = (3*2/3 + 7)/10 = 0.9
    # contains (most frequent answer): 1 "airfrance" in "airfrance" -> 1; 2 "yes" in "yesitis" -> 1;
    #   3 "2012" not in "2011" -> 0; 4 missing -> 0
    result = score_predictions("textvqa", _bench_samples(), preds)
    assert result["metric"] == "vqa" and result["official_metric"] == "vqa"
    assert result["score"] == result["official"] == pytest.approx(100 * 1.9 / 4)
    assert result["contains"] == pytest.approx(50.0)
    assert result["n_missing"] == 1
    headline = score_predictions("textvqa", _bench_samples(), preds, metric="contains")
    assert headline["metric"] == "contains" and headline["score"] == pytest.approx(50.0)
    assert headline["official"] == pytest.approx(100 * 1.9 / 4) and headline["official_metric"] == "vqa"
    with pytest.raises(ValueError, match="official, contains"):
        score_predictions("textvqa", _bench_samples(), preds, metric="bleu")

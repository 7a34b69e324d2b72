import pytest

from mpa.parsing import parse_qa


@pytest.mark.parametrize(
    ("raw", "question", "answer"),
    [
        ("Question: What is on the sign? Answer: stop", "What is on the sign?", "stop"),
        ("Question: What is on the sign?\nAnswer: stop", "What is on the sign?", "stop"),
        ("**Question:** What color?\n**Answer:** \"red\".", "What color?", "red"),
        ("Q: how many? A: 3", "how many?", "3"),
        ("QUESTION: What is written?\nANSWER: Main st.", "What is written?", "Main st"),
        ('```json\n{"question": "Which year?", "answer": 1999}\n```', "Which year?", "1999"),
        ('{"Question": "Brand?", "Answer": "nike"}', "Brand?", "nike"),
        ("Question: 'What is it?'\nAnswer: 'a cup'\nSome trailing chatter.", "What is it?", "a cup"),
        ("Question: What is 2.5 plus 1? Answer: 3.5", "What is 2.5 plus 1?", "3.5"),
    ],
)
def test_accepts_the_usual_shapes(raw, question, answer):
    p = parse_qa(raw, max_answer_words=5)
    assert p.ok, p.error
    assert (p.question, p.answer) == (question, answer)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("", "empty output"),
        ("I cannot help with that.", "no 'Question:' found"),
        ("Question: What is it?", "no 'Answer:' after the question"),
        ("Question: What is it? Answer:", "empty answer"),
        ("Question: x? Answer: one two three four five six", "answer too long (6 words > 5)"),
    ],
)
def test_failures_carry_a_reason(raw, error):
    p = parse_qa(raw, max_answer_words=5)
    assert not p.ok
    assert p.error == error


def test_word_limit_is_optional():
    assert parse_qa("Question: x? Answer: one two three four five six").ok

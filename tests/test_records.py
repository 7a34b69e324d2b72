import json

import pytest

from mpa.records import JsonlLog, read_jsonl, write_jsonl_atomic


def test_append_and_reopen_keeps_done(tmp_path):
    path = tmp_path / "a.jsonl"
    with JsonlLog(path) as log:
        log.append_group([{"id": "1"}])
        log.append_group([{"id": "2"}])
    with JsonlLog(path) as log:
        assert log.done == {"1", "2"}
        assert [r["id"] for r in log.records] == ["1", "2"]


def test_torn_last_line_is_dropped_and_redone(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": "1"}\n{"id": "2"}\n{"id": "3", "x": "trunc')
    with JsonlLog(path) as log:
        assert log.done == {"1", "2"}
        log.append_group([{"id": "3"}])
    assert [r["id"] for r in read_jsonl(path)] == ["1", "2", "3"]


def test_incomplete_groups_are_dropped(tmp_path):
    path = tmp_path / "a.jsonl"
    rows = [{"img": "a", "k": 0}, {"img": "a", "k": 1}, {"img": "b", "k": 0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with JsonlLog(path, group_of=lambda r: r["img"], group_size=lambda r: 2) as log:
        assert log.done == {"a"}
    assert len(list(read_jsonl(path))) == 2


def test_corruption_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": "1"}\nnot json\n{"id": "3"}\n')
    with pytest.raises(ValueError, match=r"a.jsonl:2"):
        JsonlLog(path)


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "p.jsonl"
    assert write_jsonl_atomic(path, [{"a": 1}, {"a": 2}]) == 2
    assert write_jsonl_atomic(path, [{"a": 3}]) == 1
    assert list(read_jsonl(path)) == [{"a": 3}]
    assert not (tmp_path / "p.jsonl.tmp").exists()

"""The one JSONL reader (crosspath/jsonl.py): torn last lines, repair, damaged middles."""

import pytest

from crosspath.jsonl import read_jsonl, read_numbered


def test_torn_last_line_is_skipped_and_repair_cuts_it(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_bytes(b'{"a": 1}\n\n{"a": 2}\n{"a": 3')
    assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    assert p.read_bytes().endswith(b'{"a": 3')  # only read
    assert read_jsonl(p, repair=True) == [{"a": 1}, {"a": 2}]
    assert p.read_bytes() == b'{"a": 1}\n\n{"a": 2}\n'
    p.write_bytes(b'{"a": 1}\n{"a": \n')  # terminated, but cut mid-JSON: torn too
    assert read_jsonl(p, repair=True) == [{"a": 1}] and p.read_bytes() == b'{"a": 1}\n'
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_a_damaged_middle_line_is_an_error_or_listed(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_bytes(b'{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(ValueError, match=r"r.jsonl:2: not a JSON line"):
        read_jsonl(p)
    bad = []
    assert read_numbered(p, skip_bad=True, bad=bad) == [(1, {"a": 1}), (3, {"a": 2})]
    assert bad == [(2, "not valid JSON")]

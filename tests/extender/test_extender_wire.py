"""The wire format's own shortcuts give the bytes the JSON encoder would."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from extender.wire import MAX_PRIORITY, WireError, decode_args, encode_priorities

from ..fuzzing import FUZZ

HOSTS = st.one_of(
    st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,30}[a-z0-9])?", fullmatch=True),  # node names
    st.text(),  # anything a request may carry: quotes, backslashes, control characters, any script
)


def as_dicts(hosts: list[str], scores: list[int]) -> bytes:
    return orjson.dumps([{"Host": host, "Score": score} for host, score in zip(hosts, scores, strict=True)])


@FUZZ
@given(st.lists(st.tuples(HOSTS, st.integers(0, MAX_PRIORITY)), max_size=30))
def test_priorities_are_the_bytes_of_the_dicts(entries: list[tuple[str, int]]) -> None:
    hosts, scores = [host for host, _ in entries], [score for _, score in entries]
    assert encode_priorities(hosts, scores) == as_dicts(hosts, scores)


@pytest.mark.parametrize(
    "hosts",
    [["a"], ["node-1", "node-2.zone"], ["a", 'b"c'], ["a\\b"], ["tab\there"], ["\u00e9t\u00e9", "\u2028"], [""]],
)
def test_priorities_of_plain_and_escaped_names(hosts: list[str]) -> None:
    scores = [index % (MAX_PRIORITY + 1) for index in range(len(hosts))]
    assert encode_priorities(hosts, scores) == as_dicts(hosts, scores)
    decoded = [{"Host": host, "Score": score} for host, score in zip(hosts, scores, strict=True)]
    assert orjson.loads(encode_priorities(hosts, scores)) == decoded


def test_priorities_need_one_score_per_host() -> None:
    with pytest.raises(ValueError, match="one score per host"):
        encode_priorities(["a", "b"], [1])
    assert encode_priorities([], []) == b"[]"


@pytest.mark.parametrize("junk", [3, None, ["a"], {"a": 1}, True])
def test_node_names_must_all_be_strings(junk: object) -> None:
    body = orjson.dumps({"Pod": {}, "NodeNames": ["a", junk, "b"]})
    with pytest.raises(WireError, match="NodeNames must be a list of node names"):
        decode_args(body)
    assert decode_args(orjson.dumps({"Pod": {}, "NodeNames": ["a", "b"]})).node_names == ["a", "b"]

from __future__ import annotations

import pytest

from authz.errors import RequestError
from authz.policy.http_parsing import parse_body, parse_path, parse_query, split_path
from authz.reasons import Reason


@pytest.mark.parametrize(
    ("raw", "path", "query"),
    [
        ("/a/b?x=1&y=2", "/a/b", "x=1&y=2"),
        ("/a/b", "/a/b", ""),
        ("/a?", "/a", ""),
        ("/a?x=1#frag", "/a", "x=1"),
        ("/a#frag?x", "/a", ""),
        ("/a?b?c", "/a", "b?c"),
    ],
)
def test_split_path(raw: str, path: str, query: str) -> None:
    assert split_path(raw) == (path, query)


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("/people/alice", ["people", "alice"]),
        ("//admin/people", ["", "admin", "people"]),
        ("///admin", ["", "", "admin"]),
        ("/", [""]),
        ("/a/", ["a", ""]),
        ("/a%2Fb/c", ["a/b", "c"]),
        ("/caf%C3%A9", ["café"]),
        ("/a+b", ["a+b"]),
        ("*", ["*"]),
    ],
)
def test_path_segments_keep_every_segment(path: str, segments: list[str]) -> None:
    assert parse_path(path) == segments


@pytest.mark.parametrize("path", ["/a%zz", "/a%", "/a%2", "/%ff%fe"])
def test_invalid_percent_encoding_in_the_path_is_a_bad_request(path: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_path(path)
    assert caught.value.reason is Reason.REQUEST_PATH_INVALID


def test_query_parameters_keep_order_and_repeats() -> None:
    assert parse_query("a=1&b=2&a=3&c&d=&e=x%20y+z") == {
        "a": ["1", "3"],
        "b": ["2"],
        "c": [""],
        "d": [""],
        "e": ["x y z"],
    }
    assert parse_query("") == {}
    assert parse_query("&&") == {}


def test_invalid_query_escapes_are_a_bad_request() -> None:
    with pytest.raises(RequestError):
        parse_query("a=%G1")


JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def test_json_body_is_parsed_from_text_or_bytes() -> None:
    assert parse_body(JSON, '{"amount": 5}', b"", 1000).value == {"amount": 5}
    assert parse_body(JSON, "", b'{"amount": 6}', 1000).value == {"amount": 6}


def test_form_body_is_parsed_like_a_query() -> None:
    assert parse_body(FORM, "a=1&a=2", b"", 1000).value == {"a": ["1", "2"]}


def test_other_content_types_are_not_parsed() -> None:
    parsed = parse_body({"content-type": "text/plain"}, "hello", b"", 1000)
    assert (parsed.value, parsed.truncated) == (None, False)
    assert parse_body({}, '{"a":1}', b"", 1000).value is None


def test_partial_bodies_are_reported_truncated_and_not_parsed() -> None:
    flagged = parse_body({**JSON, "x-envoy-auth-partial-body": "true"}, '{"a":', b"", 1000)
    assert (flagged.value, flagged.truncated) == (None, True)
    short = parse_body({**JSON, "content-length": "50"}, '{"a": 1}', b"", 1000)
    assert (short.value, short.truncated) == (None, True)


def test_bodies_over_the_limit_are_left_unparsed() -> None:
    parsed = parse_body(JSON, '{"a": "' + "x" * 100 + '"}', b"", 50)
    assert (parsed.value, parsed.truncated) == (None, False)


@pytest.mark.parametrize(
    ("headers", "body", "raw"),
    [
        (JSON, "{not json", b""),
        (JSON, '{"a": NaN}', b""),
        (JSON, "", b"\xff\xfe"),
        (FORM, "a=%zz", b""),
        (JSON, "[" * 100_000 + "]" * 100_000, b""),
    ],
)
def test_unparseable_bodies_are_a_bad_request(
    headers: dict[str, str], body: str, raw: bytes
) -> None:
    with pytest.raises(RequestError) as caught:
        parse_body(headers, body, raw, 10_000_000)
    assert caught.value.reason is Reason.REQUEST_BODY_INVALID

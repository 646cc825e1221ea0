"""The canonical-path rule: which request paths the gateway decides on at all."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.canonical_path import require_canonical_path
from authz.errors import RequestError
from authz.policy.http_parsing import parse_path
from authz.reasons import Reason
from tests.unit.test_parsing_properties import FAST, UNICODE, attempt, pieces_text

NOT_CANONICAL = [
    pytest.param("", id="empty"),
    pytest.param("api/hello", id="no-leading-slash"),
    pytest.param("*", id="asterisk-form"),
    pytest.param("//admin/users", id="leading-double-slash"),
    pytest.param("/api/payments//refunds", id="inner-double-slash"),
    pytest.param("/api/x//", id="double-trailing-slash"),
    pytest.param("/api/payments/refunds;x", id="path-parameter"),
    pytest.param("/api;x/payments/refunds", id="path-parameter-mid-path"),
    pytest.param("/api/payments/refunds;", id="bare-semicolon"),
    pytest.param("/api/payments/refunds%3Bx", id="encoded-semicolon-upper"),
    pytest.param("/api/payments/refunds%3bx", id="encoded-semicolon-lower"),
    pytest.param("/./api/hello", id="dot-segment"),
    pytest.param("/api/hello/.", id="trailing-dot-segment"),
    pytest.param("/api/../admin/users", id="dotdot-segment"),
    pytest.param("/api/hello/..", id="trailing-dotdot-segment"),
    pytest.param("/api/%2e%2e/admin", id="encoded-dotdot"),
    pytest.param("/api/%2E%2E/admin", id="encoded-dotdot-upper"),
    pytest.param("/api/.%2e/admin", id="half-encoded-dotdot"),
    pytest.param("/api/%2e/hello", id="encoded-dot"),
    pytest.param("/api/a%2Fb", id="encoded-slash-upper"),
    pytest.param("/api/a%2fb", id="encoded-slash-lower"),
    pytest.param("/api/a%5Cb", id="encoded-backslash-upper"),
    pytest.param("/api/a%5cb", id="encoded-backslash-lower"),
    pytest.param("/api\\..\\admin", id="backslash"),
]

CANONICAL = [
    pytest.param("/", id="root"),
    pytest.param("/api/hello", id="plain"),
    pytest.param("/api/hello/", id="trailing-slash"),
    pytest.param("/api/%68ello", id="encoded-unreserved"),
    pytest.param("/%7Eops/%41", id="encoded-tilde-and-letter"),
    pytest.param("/caf%C3%A9", id="encoded-utf8"),
    pytest.param("/a%20b/c+d", id="encoded-space-and-plus"),
    pytest.param("/.well-known/jwks.json", id="leading-dot-in-name"),
    pytest.param("/api/...", id="three-dots"),
    pytest.param("/api/..x/.y", id="dots-in-names"),
    pytest.param("/a/b:c@d!$&'()*+,=", id="other-sub-delims"),
    pytest.param("/a/%25/b", id="encoded-percent"),
]


@pytest.mark.parametrize("path", NOT_CANONICAL)
def test_non_canonical_path_is_refused_with_its_reason(path: str) -> None:
    with pytest.raises(RequestError) as caught:
        require_canonical_path(path)
    assert caught.value.reason is Reason.REQUEST_PATH_NOT_CANONICAL


@pytest.mark.parametrize("path", CANONICAL)
def test_canonical_path_is_accepted(path: str) -> None:
    require_canonical_path(path)


# --- properties ----------------------------------------------------------------------------

# Characters that may appear in a canonical segment, and pieces that come close to the
# forbidden ones (escapes of other characters, dots in names).
SAFE_PIECES = st.sampled_from(
    [*"abcAZ09-._~!$&'()*+,=:@", "%41", "%7E", "%20", "%25", "%C3%A9", "%2E.", "..a", "%3A"]
)
SEGMENT = st.lists(SAFE_PIECES, min_size=1, max_size=6).map("".join)
NEAR_MISSES = pieces_text(
    st.sampled_from([*"/;\\.%aA", "%3b", "%3B", "%2f", "%2F", "%5c", "%5C", "%2e", "%2E"])
    | UNICODE,
    30,
)


@FAST
@given(segments=st.lists(SEGMENT, max_size=6), trailing_slash=st.booleans())
def test_paths_of_named_segments_are_canonical(segments: list[str], trailing_slash: bool) -> None:
    named = [s for s in segments if s.replace("%2E", ".") not in (".", "..")]
    path = "/" + "/".join(named) + ("/" if trailing_slash and named else "")
    require_canonical_path(path)


@FAST
@given(path=st.one_of(NEAR_MISSES.map(lambda text: "/" + text), st.text()))
def test_an_accepted_path_parses_to_segments_prefix_matching_can_trust(path: str) -> None:
    """What policies rely on: every segment of an accepted path names something, except a
    trailing empty one; none is a dot segment or hides a separator or a path parameter."""
    refused = attempt(lambda: require_canonical_path(path), RequestError)
    if isinstance(refused, RequestError):
        assert refused.reason is Reason.REQUEST_PATH_NOT_CANONICAL
        return
    segments = attempt(lambda: parse_path(path), RequestError)
    if isinstance(segments, RequestError):
        assert segments.reason is Reason.REQUEST_PATH_INVALID
        return
    assert path.startswith("/")
    for segment in segments[:-1]:
        assert segment
    for segment in segments:
        assert segment not in (".", "..")
        assert not set(segment) & {"/", "\\", ";"}

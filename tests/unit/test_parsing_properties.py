"""Property tests for everything that parses attacker-controlled text.

Each parser may only fail with its own domain error (never a stray `ValueError`,
`UnicodeError`, `IndexError`, `RecursionError`...), and what it accepts must satisfy the
invariants later stages rely on. The whole pipeline, fed arbitrary credential headers,
never raises and never allows.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from authz.answers import Allowed, Failed
from authz.credentials.claims import numeric_date
from authz.credentials.identifiers import InvalidIdentifier, parse_workload_id
from authz.credentials.jose import JoseReasons, b64url_encode, parse_compact_jws
from authz.credentials.presentation import CREDENTIAL_HEADERS, SizeLimits, read_credentials
from authz.errors import CredentialError, RequestError
from authz.policy.http_parsing import parse_path, parse_query, split_path
from authz.reasons import Reason
from tests.security.forgery import AUTHORIZATION, DROP, WIT_HEADER, Forge, attacker_key, with_wpt
from tests.support import ORIGIN, GatewayHarness

T = TypeVar("T")
E = TypeVar("E", bound=Exception)

FAST = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PIPELINE = settings(
    FAST,
    max_examples=300,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

REASONS = JoseReasons(
    malformed=Reason.WIT_MALFORMED,
    header_key_forbidden=Reason.WIT_HEADER_KEY_FORBIDDEN,
    crit_unsupported=Reason.WIT_CRIT_UNSUPPORTED,
    b64_unsupported=Reason.WIT_B64_UNSUPPORTED,
)
JOSE_CODES = {
    Reason.WIT_MALFORMED,
    Reason.WIT_HEADER_KEY_FORBIDDEN,
    Reason.WIT_CRIT_UNSUPPORTED,
    Reason.WIT_B64_UNSUPPORTED,
}


def attempt(call: Callable[[], T], expected: type[E]) -> T | E:
    """The call's result, or the `expected` error it raised (anything else propagates)."""
    try:
        return call()
    except expected as error:
        return error


def _byte_length(value: str) -> int:
    return len(value.encode("utf-8"))


# --- strategies ----------------------------------------------------------------------------

# Any character that can be encoded as UTF-8: Envoy's headers and paths arrive as protobuf
# strings, which are valid UTF-8 by construction, so lone surrogates cannot occur.
UNICODE = st.characters(codec="utf-8")
# Characters that matter to the parsers, mixed with arbitrary text.
TRICKY = ",. =;:/?#%+@\t\"'\\{}[]\u00e9\u3002\uff0c\u0000"
tricky_text = st.text(alphabet=st.sampled_from(TRICKY) | UNICODE, max_size=40)


@st.composite
def sized_text(draw: st.DrawFn) -> str:
    """Text from a few characters up to ~100 KiB (built by repetition, to stay fast)."""
    unit = draw(tricky_text.filter(bool))
    repeat = draw(st.sampled_from([1, 1, 1, 2, 50, 500, 2000, 20_000]))
    return unit * repeat


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
ALGS = ["ES256", "EdDSA", "Ed25519", "none", "HS256", ""]
FORBIDDEN = ["jwk", "jku", "x5u", "x5c", "crit", "b64"]


@st.composite
def jose_headers(draw: st.DrawFn) -> dict[str, object]:
    """Mostly plausible JOSE headers: a string `alg`, sometimes a forbidden member."""
    header: dict[str, object] = {}
    if draw(st.integers(0, 9)) > 0:
        header["alg"] = draw(st.sampled_from(ALGS) | st.text(max_size=6))
    else:
        header["alg"] = draw(json_values)
    header["typ"] = draw(st.sampled_from(["wit+jwt", "wpt+jwt", "JWT"]) | json_values)
    extra = draw(
        st.dictionaries(
            st.sampled_from([*FORBIDDEN, "kid"]) | st.text(max_size=4), json_values
        ).filter(lambda members: len(members) <= 2)
    )
    if draw(st.booleans()):
        header.update(extra)
    return header


def _json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()


# Hand-written JSON: duplicates, NaN, overflow, deep nesting, invalid UTF-8, non-objects.
RAW_JSON = [
    b'{"alg":"ES256","alg":"none"}',
    b'{"alg":"ES256","exp":NaN}',
    b'{"alg":"ES256","exp":1e400}',
    b'{"alg":"\xff"}',
    b'{"alg":"ES256","x":' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"alg":"ES256","n":' + b"9" * 5000 + b"}",
    b"[]",
    b"",
]


@st.composite
def object_segment(draw: st.DrawFn, objects: st.SearchStrategy[object]) -> str:
    """base64url of a JSON object (usually), of other JSON, raw bytes, or plain text."""
    kind = draw(st.sampled_from(["object"] * 6 + ["json", "raw", "bytes", "text"]))
    if kind == "object":
        return b64url_encode(_json_bytes(draw(objects)))
    if kind == "json":
        return b64url_encode(_json_bytes(draw(json_values)))
    if kind == "raw":
        return b64url_encode(draw(st.sampled_from(RAW_JSON))) + draw(
            st.sampled_from(["", "=", "==", "A"])
        )
    if kind == "bytes":
        return b64url_encode(draw(st.binary(max_size=40)))
    return draw(tricky_text)


@st.composite
def compact_tokens(draw: st.DrawFn) -> str:
    """Three segments most of the time, each usually well-formed, so parsing goes deep."""
    segments = [
        draw(object_segment(jose_headers())),
        draw(object_segment(st.dictionaries(st.text(max_size=5), json_values, max_size=4))),
        draw(
            st.one_of(
                st.binary(min_size=1, max_size=64).map(b64url_encode),
                st.binary(min_size=1, max_size=64).map(b64url_encode),
                tricky_text,
                st.sampled_from(["", "AAAA==", "A", "+/+/"]),
            )
        ),
    ]
    count = draw(st.sampled_from([3] * 6 + [1, 2, 4, 5]))
    while len(segments) < count:
        segments.append(draw(st.binary(max_size=8).map(b64url_encode)))
    return ".".join(segments[:count])


identifier_pieces = st.sampled_from([*"abcz09.-_~AZ%2F/:@?#!$&'()*+,;= \u00e9", "..", "%41", "%2e"])


def pieces_text(pieces: st.SearchStrategy[str], max_size: int) -> st.SearchStrategy[str]:
    """Text assembled from single characters and multi-character pieces."""
    return st.lists(pieces, max_size=max_size).map("".join)


VALID_AUTHORITY = st.sampled_from(["demo.example", "a", "x-y_z.0", "0.0"])
VALID_SEGMENT = st.sampled_from(["frontend", "a.b", "A-9_", "b:c@d", "~x", "..."])


@st.composite
def identifier_like(draw: st.DrawFn) -> str:
    """Identifier-shaped strings, a fair share of them valid, the rest nearly so."""
    scheme = draw(
        st.sampled_from(["spiffe://"] * 4 + ["wimse://"] * 3 + ["SPIFFE://", "https://", ""])
    )
    authority = draw(
        st.one_of(
            VALID_AUTHORITY,
            VALID_AUTHORITY,
            VALID_AUTHORITY,
            st.sampled_from(["", "Demo.example", "d:1", "u@d", "demo%2eexample"]),
            pieces_text(identifier_pieces, 6),
        )
    )
    segments = draw(
        st.lists(
            st.one_of(
                VALID_SEGMENT,
                VALID_SEGMENT,
                VALID_SEGMENT,
                VALID_SEGMENT,
                VALID_SEGMENT,
                st.sampled_from([".", "..", "", "x%41"]),
                pieces_text(identifier_pieces, 5),
            ),
            min_size=1,
            max_size=3,
        )
    )
    tail = draw(st.sampled_from([""] * 8 + ["/", "?q", "#f"]))
    return scheme + authority + "".join("/" + s for s in segments) + tail


# --- read_credentials -----------------------------------------------------------------------

header_maps = st.dictionaries(
    st.sampled_from([*CREDENTIAL_HEADERS, "x-user-token", "host", "x-other"]),
    st.one_of(
        compact_tokens(),
        st.builds(
            lambda scheme, sep, token: f"{scheme}{sep}{token}",
            st.sampled_from(["WPT", "wpt", "Bearer", "Basic", ""]),
            st.sampled_from([" ", "  ", "\t", ""]),
            compact_tokens() | tricky_text,
        ),
        st.builds(
            lambda a, b: f"{a},{b}",
            compact_tokens().map(lambda t: "WPT " + t),
            tricky_text | compact_tokens().map(lambda t: "WPT " + t),
        ),
        sized_text(),
        tricky_text,
        st.sampled_from(["", " ", ",", "WPT", "WPT ", "wpt ,", "Bearer"]),
    ),
    max_size=6,
)
limits = st.builds(
    SizeLimits,
    token_header_bytes=st.sampled_from([16, 512, 8 * 1024, 8 * 1024]),
    credential_headers_bytes=st.sampled_from([64, 4096, 64 * 1024, 64 * 1024]),
)


@FAST
@given(
    headers=header_maps,
    limits=limits,
    legacy=st.booleans(),
    context=st.lists(st.sampled_from(["x-user-token", "x-other"]), max_size=2, unique=True),
)
def test_read_credentials_only_raises_credential_error(
    headers: dict[str, str], limits: SizeLimits, legacy: bool, context: list[str]
) -> None:
    presented = attempt(
        lambda: read_credentials(headers, limits, legacy_wpt=legacy, context_headers=context),
        CredentialError,
    )
    if isinstance(presented, CredentialError):
        return
    # What is accepted respects every bound and is unambiguous.
    counted = [*CREDENTIAL_HEADERS, *context]
    total = sum(_byte_length(headers[name]) for name in counted if name in headers)
    assert total <= limits.credential_headers_bytes
    for token in (presented.wit, presented.wpt):
        if token is not None:
            assert "," not in token
            assert _byte_length(token) <= limits.token_header_bytes
    if presented.wpt is not None:
        assert not presented.signature
        if not presented.legacy_form:
            # `Authorization: WPT` carries exactly one non-empty token68 (the pre-02 header
            # is taken whole and left to the JWS parser).
            assert presented.wpt
            assert " " not in presented.wpt
    if presented.legacy_form:
        assert legacy
    assert presented.wit == headers.get("workload-identity-token")


# --- parse_compact_jws ----------------------------------------------------------------------


@FAST
@given(token=st.one_of(compact_tokens(), compact_tokens(), sized_text(), st.text()))
def test_parse_compact_jws_only_raises_credential_error(token: str) -> None:
    jws = attempt(lambda: parse_compact_jws(token, REASONS), CredentialError)
    if isinstance(jws, CredentialError):
        assert jws.reason in JOSE_CODES
        return
    head, payload, _ = token.split(".")
    assert isinstance(jws.header, dict)
    assert isinstance(jws.claims, dict)
    assert isinstance(jws.header["alg"], str)
    assert not {"jwk", "jku", "x5u", "x5c", "crit", "b64"} & jws.header.keys()
    assert jws.signing_input == f"{head}.{payload}".encode("ascii")
    assert jws.signature


# --- numeric dates (`exp`, `iat`, `nbf`) -----------------------------------------------------


@FAST
@given(
    value=st.one_of(
        json_values,
        st.integers(min_value=-(10**500), max_value=10**500),
        st.floats(),
    )
)
def test_numeric_date_only_raises_value_error(value: object) -> None:
    # Claim values come from signed tokens; a verifier must still classify every JSON value.
    result = attempt(lambda: numeric_date({"exp": value}, "exp"), ValueError)
    if isinstance(result, ValueError):
        return
    assert isinstance(result, float)
    assert math.isfinite(result)


# --- parse_workload_id ----------------------------------------------------------------------

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SPIFFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def assert_canonical(uri: str) -> None:
    """An independent statement of the canonical form (draft-ietf-wimse-identifier)."""
    assert uri.isascii()
    assert len(uri) <= 2048
    scheme, separator, rest = uri.partition("://")
    assert separator
    assert scheme in ("spiffe", "wimse")
    assert "?" not in rest
    assert "#" not in rest
    assert "%" not in rest
    trust_domain, slash, path = rest.partition("/")
    assert _TRUST_DOMAIN.fullmatch(trust_domain)
    assert slash
    assert path
    for part in path.split("/"):
        assert part not in ("", ".", "..")
        if scheme == "spiffe":
            assert _SPIFFE_SEGMENT.fullmatch(part)


@FAST
@given(
    value=st.one_of(
        identifier_like(),
        st.text(),
        st.none(),
        st.integers(),
        st.lists(st.text(max_size=3), max_size=2),
    )
)
def test_parse_workload_id_accepts_only_canonical_ids_and_round_trips(value: object) -> None:
    identifier = attempt(lambda: parse_workload_id(value), InvalidIdentifier)
    if isinstance(identifier, InvalidIdentifier):
        return
    assert isinstance(value, str)
    assert identifier.uri == value
    assert str(identifier) == value
    assert_canonical(identifier.uri)
    assert value == f"{identifier.scheme}://{identifier.trust_domain}{identifier.path}"
    assert parse_workload_id(identifier.uri) == identifier


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://demo.example/frontend",
        "spiffe://a-b_c.d/e.f_g-h/I9",
        "wimse://demo.example/a/b",
        "wimse://a/b:c@d!$&'()*+,;=~",
    ],
)
def test_canonical_identifiers_are_accepted(uri: str) -> None:
    # Guards the property above: the parser and `assert_canonical` agree on valid IDs.
    assert parse_workload_id(uri).uri == uri
    assert_canonical(uri)


# --- parse_path / parse_query ---------------------------------------------------------------

path_text = pieces_text(
    st.sampled_from([*"/%2Fa+?.\u00e9 ", "%", "%2", "%C3", "%A9", "%FF", "%zz", "%2F"]) | UNICODE,
    40,
)


@FAST
@given(path=st.one_of(path_text, st.text()))
def test_parse_path_only_raises_request_error_and_keeps_every_segment(path: str) -> None:
    path = "/" + path
    segments = attempt(lambda: parse_path(path), RequestError)
    if isinstance(segments, RequestError):
        assert segments.reason == Reason.REQUEST_PATH_INVALID
        return
    assert len(segments) == path.count("/")
    if "%" not in path:
        assert segments == path[1:].split("/")


@FAST
@given(path=path_text)
def test_parse_path_without_leading_slash_only_raises_request_error(path: str) -> None:
    segments = attempt(lambda: parse_path(path), RequestError)
    if not isinstance(segments, RequestError):
        assert len(segments) == path.count("/") + (0 if path.startswith("/") else 1)


@FAST
@given(segments=st.lists(st.text(), min_size=1, max_size=5))
def test_parse_path_decodes_what_percent_encoding_encoded(segments: list[str]) -> None:
    path = "/" + "/".join(quote(segment, safe="") for segment in segments)
    assert parse_path(path) == segments


@FAST
@given(query=st.one_of(path_text, st.text()))
def test_parse_query_only_raises_request_error(query: str) -> None:
    params = attempt(lambda: parse_query(query), RequestError)
    if isinstance(params, RequestError):
        assert params.reason == Reason.REQUEST_PATH_INVALID
        return
    assert all(isinstance(values, list) and values for values in params.values())


@FAST
@given(pairs=st.lists(st.tuples(st.text(), st.text()), max_size=5))
def test_parse_query_decodes_form_encoding(pairs: list[tuple[str, str]]) -> None:
    expected: defaultdict[str, list[str]] = defaultdict(list)
    for name, value in pairs:
        expected[name].append(value)
    assert parse_query(urlencode(pairs)) == dict(expected)


# --- the whole pipeline ---------------------------------------------------------------------


REPLACEMENTS = ["A", "_", "-", ".", "=", ",", "\u00e9", " ", "AA"]


def _mutate(token: str, index: int, choice: int, mode: str) -> str:
    """Replace, insert or delete one character; the result always differs from `token`."""
    if mode == "delete":
        return token[:index] + token[index + 1 :]
    replacement = REPLACEMENTS[choice]
    if mode == "insert":
        return token[:index] + replacement + token[index:]
    if replacement == token[index]:
        replacement = REPLACEMENTS[(choice + 1) % len(REPLACEMENTS)]
    return token[:index] + replacement + token[index + 1 :]


def _mutations(token: str) -> st.SearchStrategy[str]:
    """One-character edits anywhere but the token's last character.

    The last base64url character of a 64-byte signature carries 4 unused bits, which the
    decoder ignores: changing only those yields the same signature (and a valid token).
    No `.filter()` here: the tokens differ between runs (ES256 signatures are randomised),
    and a filter's retries would make hypothesis's data generation inconsistent.
    """
    return st.builds(
        lambda index, choice, mode: _mutate(token, index, choice, mode),
        st.integers(min_value=0, max_value=len(token) - 2),
        st.integers(min_value=0, max_value=len(REPLACEMENTS) - 1),
        st.sampled_from(["replace", "insert", "delete"]),
    )


def _near_misses(forge: Forge, wit: str) -> list[str]:
    """Well-formed WPTs that each fail exactly one check when presented with `wit`."""
    return [
        forge.wpt(forge.wit()),  # binds a WIT that is never sent
        forge.wpt(wit, audience=ORIGIN + "/api/other"),
        forge.wpt(wit, audience="https://attacker.example/api/hello"),
        forge.wpt(wit, header={"alg": "Ed25519"}),
        forge.wpt(wit, header={"typ": "JWT"}),
        forge.wpt(wit, header={"jwk": {"kty": "OKP"}}),
        forge.wpt(wit, claims={"exp": forge.now - 120}),
        forge.wpt(wit, claims={"exp": forge.now + 3600}),
        forge.wpt(wit, claims={"jti": DROP}),
        forge.wpt(wit, claims={"wth": DROP}),
        forge.wpt(wit, claims={"oth": {"x-user-token": "AAAA"}}),
        forge.wpt(wit, key=attacker_key("EdDSA")),
        forge.wpt(wit, workload="batch"),
    ]


def weighted(*choices: tuple[int, st.SearchStrategy[str | None]]) -> st.SearchStrategy[str | None]:
    """Pick a strategy in proportion to its weight (`one_of` would weigh them equally)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


@PIPELINE
@given(data=st.data())
def test_pipeline_never_raises_and_never_allows_arbitrary_credentials(
    harness: GatewayHarness, data: st.DataObject
) -> None:
    forge = Forge(harness)
    wit = forge.wit()
    wpt = forge.wpt(wit)
    # Control: this pair is valid, and now spent. Every WPT drawn below is a replay of it,
    # a mutation of it, a near miss, or arbitrary text: none may ever be allowed.
    assert isinstance(harness.check_path("/api/hello", with_wpt(wit, wpt)), Allowed)
    other_wit = forge.wit()
    near_misses = st.sampled_from(_near_misses(forge, wit))
    anything = st.one_of(st.text(), sized_text(), compact_tokens())
    wpt_like = weighted(
        (3, near_misses),
        (2, _mutations(wpt)),
        (1, st.just(wpt)),
        (1, compact_tokens()),
    )
    headers_drawn = {
        WIT_HEADER: data.draw(
            weighted(
                (5, st.just(wit)),
                (2, _mutations(wit)),
                (1, st.sampled_from([other_wit, f"{wit},{wit}", f"{wit} ", wpt])),
                (1, anything),
                (1, st.none()),
            ),
            label="wit",
        ),
        AUTHORIZATION: data.draw(
            weighted(
                (6, wpt_like.map(lambda t: f"WPT {t}")),
                (
                    1,
                    st.sampled_from(
                        [
                            f"Bearer {wpt}",
                            f"WPT {wpt},WPT {wpt}",
                            f"Bearer x,WPT {wpt}",
                            f"WPT {wpt} x",
                            f"WPT\t{wpt}",
                            f"WPT {wit}",
                            "WPT",
                        ]
                    ),
                ),
                (1, anything),
                (1, st.none()),
            ),
            label="authorization",
        ),
        "txn-token": data.draw(
            weighted((4, st.none()), (1, st.text()), (1, sized_text())), label="txn-token"
        ),
        "workload-proof-token": data.draw(
            weighted((6, st.none()), (1, wpt_like), (1, anything)), label="workload-proof-token"
        ),
    }
    headers = {name: value for name, value in headers_drawn.items() if value is not None}
    verdict = harness.check_path("/api/hello", headers)
    assert not isinstance(verdict, Allowed), f"allowed: {headers!r}"
    event(str(verdict.reason))  # `--hypothesis-show-statistics` shows how deep checks went


WIT_CLAIMS = ["sub", "exp", "iat", "nbf", "iss", "jti", "cnf"]
WPT_CLAIMS = ["aud", "exp", "iat", "jti", "wth", "tth", "oth"]
claim_values = st.one_of(
    json_values,
    st.integers(min_value=-(10**500), max_value=10**500),
    st.integers(min_value=1_799_990_000, max_value=1_800_100_000),
    st.dictionaries(st.text(max_size=12), json_values, max_size=3).map(lambda d: {"jwk": d}),
)


@PIPELINE
@given(data=st.data())
def test_pipeline_classifies_every_signed_claim_value(
    harness: GatewayHarness, data: st.DataObject
) -> None:
    """A correctly signed token with any JSON value in one claim: allowed or denied with a
    reason, never an unexpected error (503 `internal.error`) or an exception."""
    forge = Forge(harness)
    token = data.draw(st.sampled_from(["wit", "wpt"]), label="token")
    name = data.draw(st.sampled_from(WIT_CLAIMS if token == "wit" else WPT_CLAIMS), label="claim")
    value = data.draw(claim_values, label="value")
    if token == "wit":
        headers = forge.headers(wit=forge.wit(claims={name: value}))
    else:
        headers = forge.headers(wpt_claims={name: value})
    verdict = harness.check_path("/api/hello", headers)
    assert not isinstance(verdict, Failed), f"{token} {name}={value!r}: {verdict.reason}"
    event(f"{token}.{name}: {verdict.reason}")


@PIPELINE
@given(path=st.one_of(path_text, st.text()))
def test_pipeline_never_raises_for_any_path_and_allows_only_the_public_one(
    harness: GatewayHarness, path: str
) -> None:
    raw_path = "/" + path
    verdict = harness.check_path(raw_path, {})
    if isinstance(verdict, Allowed):
        assert parse_path(split_path(raw_path)[0]) == ["healthz"]

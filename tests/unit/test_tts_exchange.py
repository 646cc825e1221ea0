"""The Txn-Token Request parser and the Txn-Token / error responses (authz.tts.exchange)."""

from __future__ import annotations

import json
import re
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.tts.exchange import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    JWT_TOKEN_TYPE,
    REFRESH_TOKEN_TYPE,
    SELF_SIGNED_TYPE,
    SUBJECT_TOKEN_TYPES,
    TXN_TOKEN_TYPE,
    UNSIGNED_JSON_TYPE,
    ExchangeError,
    ExchangeRequest,
    error_response,
    parse_exchange_request,
    success_response,
)

FORM = "application/x-www-form-urlencoded"
MAX_BODY = 64 * 1024
# Long and secret-looking, so that an echo anywhere in a description would be caught.
SECRET = (
    "eyJhbGciOiJFUzI1NiIsImtpZCI6InMzY3IzdCJ9."
    "eyJzdWIiOiJhbGljZSIsInNlY3JldCI6Imh1bnRlcjIifQ."
    "c2VjcmV0LXNpZ25hdHVyZS1kby1ub3QtbG9n"
)
MINIMAL = {
    "grant_type": GRANT_TYPE,
    "requested_token_type": TXN_TOKEN_TYPE,
    "audience": "trust-domain.example",
    "scope": "trade.stocks",
    "subject_token": SECRET,
    "subject_token_type": ACCESS_TOKEN_TYPE,
}
# RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E.
DESCRIPTION_CHARSET = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")
FAST = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def form(**changes: str | None) -> bytes:
    """The minimal valid request with `changes` applied (None removes a parameter)."""
    parameters: dict[str, str | None] = {**MINIMAL, **changes}
    return urlencode({k: v for k, v in parameters.items() if v is not None}).encode("ascii")


def pairs(*items: tuple[str, str]) -> bytes:
    return urlencode(list(items)).encode("ascii")


def parse(body: bytes, content_type: str | None = FORM, **limits: int) -> ExchangeRequest:
    return parse_exchange_request(
        body, content_type, max_body_bytes=limits.pop("max_body_bytes", MAX_BODY), **limits
    )


def outcome(
    body: bytes, content_type: str | None = FORM, **limits: int
) -> ExchangeRequest | ExchangeError:
    """The parsed request, or the ExchangeError it raised (anything else propagates)."""
    try:
        return parse(body, content_type, **limits)
    except ExchangeError as error:
        return error


def refusal(body: bytes, content_type: str | None = FORM, **limits: int) -> ExchangeError:
    with pytest.raises(ExchangeError) as caught:
        parse(body, content_type, **limits)
    return caught.value


# --- the happy path -------------------------------------------------------------------------


def test_minimal_valid_request_parses() -> None:
    assert parse(form()) == ExchangeRequest(
        audience="trust-domain.example",
        scope=("trade.stocks",),
        subject_token=SECRET,
        subject_token_type=ACCESS_TOKEN_TYPE,
        request_context=None,
        request_details=None,
    )


def test_draft_example_request_parses() -> None:
    # draft-ietf-oauth-transaction-tokens-10, "Example: Txn-Token Request" (line breaks removed).
    body = (
        b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
        b"&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Atxn_token"
        b"&audience=trust-domain.example"
        b"&scope=trade.stocks"
        b"&subject_token=eyJhbGciOiJFUzI1NiIsImtpZC...kdXjwhw"
        b"&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
        b"&request_context=%7B%0A%20%20%20%20%20%20%22req_ip%22%3A%20%2269.151.72.123%22%2C%20"
        b"%0A%20%20%20%20%20%20%22authn%22%3A%20%22face%22%0A%7D"
        b"&request_details=%7B%0A%20%20%20%20%20%20%22action%22%3A%20%22BUY%22%2C%0A%20%20%20%20"
        b"%20%20%22ticker%22%3A%20%22MSFT%22%2C%0A%20%20%20%20%20%20%22quantity%22%3A%20%22100%22"
        b"%0A%7D"
    )
    request = parse(body)
    assert request.subject_token == "eyJhbGciOiJFUzI1NiIsImtpZC...kdXjwhw"
    assert request.request_context == {"req_ip": "69.151.72.123", "authn": "face"}
    assert request.request_details == {"action": "BUY", "ticker": "MSFT", "quantity": "100"}


def test_subject_token_types_are_the_verifiable_kinds_without_refresh_token() -> None:
    assert {
        ACCESS_TOKEN_TYPE,
        JWT_TOKEN_TYPE,
        SELF_SIGNED_TYPE,
        UNSIGNED_JSON_TYPE,
        TXN_TOKEN_TYPE,
    } == SUBJECT_TOKEN_TYPES
    assert REFRESH_TOKEN_TYPE not in SUBJECT_TOKEN_TYPES


@pytest.mark.parametrize("token_type", sorted(SUBJECT_TOKEN_TYPES))
def test_each_accepted_subject_token_type_parses(token_type: str) -> None:
    assert parse(form(subject_token_type=token_type)).subject_token_type == token_type


def test_request_repr_leaves_the_subject_token_out() -> None:
    assert SECRET not in repr(parse(form()))


# --- content type and body framing ----------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        FORM,
        "Application/X-WWW-Form-URLEncoded",
        f"{FORM}; charset=utf-8",
        f"{FORM};charset=UTF-8",
        f'{FORM}; Charset="utf-8"',
        f"{FORM} ;\tcharset=utf-8 ",
        f"{FORM};",
    ],
)
def test_form_content_type_is_accepted(content_type: str) -> None:
    assert parse(form(), content_type).audience == "trust-domain.example"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/json",
        "multipart/form-data; boundary=x",
        "text/plain",
        "application/x-www-form-urlencoded-extra",
        f"{FORM}; charset=iso-8859-1",
        f"{FORM}; charset=utf-16",
        f"{FORM}; charset=utf8",
        f"{FORM}; charset",
        f"{FORM}; boundary=x",
        f"{FORM}; charset=utf-8; q=1",
    ],
)
def test_other_content_type_is_refused_as_invalid_request(content_type: str | None) -> None:
    error = refusal(form(), content_type)
    assert (error.error, error.status) == ("invalid_request", 400)


def test_body_over_the_limit_is_refused_with_413() -> None:
    body = form()
    error = refusal(body, max_body_bytes=len(body) - 1)
    assert (error.error, error.status) == ("invalid_request", 413)


def test_body_at_the_limit_is_accepted() -> None:
    body = form()
    assert parse(body, max_body_bytes=len(body)).scope == ("trade.stocks",)


def test_empty_body_is_refused() -> None:
    error = refusal(b"")
    assert (error.error, error.status, error.description) == (
        "invalid_request",
        400,
        "the request body is empty",
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(form() + b"&x=\xc3\xa9", id="raw non-ascii byte"),
        pytest.param(form() + b"&x=%C3", id="percent-decoding not utf-8"),
        pytest.param(form() + b"&x=%ff%fe", id="percent-decoding invalid utf-8"),
        pytest.param(form() + b"&x=%zz", id="stray percent"),
        pytest.param(form() + b"&x=%4", id="truncated escape"),
        pytest.param(form() + b"&x", id="field without equals"),
        pytest.param(form() + b"&&x=1", id="empty field"),
        pytest.param(form() + b"&", id="trailing ampersand"),
        pytest.param(form() + b"&x=a b", id="raw space"),
        pytest.param(form() + b"\n", id="trailing newline"),
        pytest.param(form() + b"&x=\x00", id="control character"),
        pytest.param(form() + b"&=x", id="parameter without a name"),
    ],
)
def test_malformed_body_is_refused_as_invalid_request(body: bytes) -> None:
    error = refusal(body)
    assert (error.error, error.status) == ("invalid_request", 400)


def test_more_than_32_parameters_are_refused() -> None:
    body = form() + b"".join(b"&x%d=1" % n for n in range(27))  # 6 + 27 = 33
    error = refusal(body)
    assert (error.error, error.description) == (
        "invalid_request",
        "the request has more than 32 parameters",
    )


def test_32_parameters_are_accepted() -> None:
    body = form() + b"".join(b"&x%d=1" % n for n in range(26))  # 6 + 26 = 32
    assert parse(body).audience == "trust-domain.example"


def test_plus_decodes_to_space_between_scope_tokens() -> None:
    assert parse(form().replace(b"scope=trade.stocks", b"scope=a+b")).scope == ("a", "b")


# --- parameters: blank, unknown, repeated ---------------------------------------------------


def test_unknown_parameters_are_ignored() -> None:
    body = form() + b"&client_id=gw&foo=bar&" + quote("weird name").encode() + b"=1"
    assert parse(body) == parse(form())


@pytest.mark.parametrize(
    ("parameter", "description"),
    [
        ("grant_type", "grant_type is missing"),
        ("requested_token_type", "requested_token_type is missing"),
        ("audience", "audience is missing"),
        ("scope", "scope is missing"),
        ("subject_token", "subject_token is missing"),
        ("subject_token_type", "subject_token_type is missing"),
    ],
)
@pytest.mark.parametrize("sent_blank", [False, True], ids=["omitted", "blank"])
def test_required_parameter_omitted_or_blank_is_refused_as_missing(
    parameter: str, description: str, sent_blank: bool
) -> None:
    error = refusal(form(**{parameter: "" if sent_blank else None}))
    assert (error.error, error.status, error.description) == ("invalid_request", 400, description)


@pytest.mark.parametrize(
    "parameter",
    ["actor_token", "actor_token_type", "resource", "request_context", "request_details"],
)
def test_blank_optional_parameter_is_treated_as_absent(parameter: str) -> None:
    assert parse(form(**{parameter: ""})) == parse(form())


def test_blank_repeat_of_a_parameter_does_not_count_as_a_repeat() -> None:
    body = form() + b"&scope=&grant_type="
    assert parse(body).scope == ("trade.stocks",)


@pytest.mark.parametrize(
    "parameter",
    [
        "grant_type",
        "requested_token_type",
        "scope",
        "subject_token",
        "subject_token_type",
        "request_context",
        "request_details",
        "actor_token",
    ],
)
def test_repeated_parameter_is_refused_as_invalid_request(parameter: str) -> None:
    value = MINIMAL.get(parameter, "{}")
    body = form(**{parameter: value}) + b"&" + pairs((parameter, value))
    error = refusal(body)
    assert (error.error, error.status) == ("invalid_request", 400)
    assert error.description == f"{parameter} is sent more than once"


def test_repeated_unknown_parameter_is_refused_without_echoing_its_name() -> None:
    error = refusal(form() + b"&x-secret-name=1&x-secret-name=2")
    assert error.error == "invalid_request"
    assert error.description == "a parameter is sent more than once"


# --- grant, delegation, token types ---------------------------------------------------------


@pytest.mark.parametrize(
    "grant_type",
    [
        "authorization_code",
        "client_credentials",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        GRANT_TYPE.upper(),
        GRANT_TYPE + " ",
    ],
)
def test_other_grant_type_is_refused_as_unsupported_grant_type(grant_type: str) -> None:
    error = refusal(form(grant_type=grant_type))
    assert (error.error, error.status) == ("unsupported_grant_type", 400)


@pytest.mark.parametrize(
    "actor",
    [
        {"actor_token": "eyJhY3Rvcg"},
        {"actor_token_type": JWT_TOKEN_TYPE},
        {"actor_token": "eyJhY3Rvcg", "actor_token_type": JWT_TOKEN_TYPE},
    ],
)
def test_actor_token_is_refused_because_the_requester_is_the_actor(actor: dict[str, str]) -> None:
    error = refusal(form(**actor))
    assert (error.error, error.status) == ("invalid_request", 400)
    assert error.description == (
        "delegation by actor token is not supported; the requester is the actor"
    )


@pytest.mark.parametrize(
    "requested", [ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, "txn_token", TXN_TOKEN_TYPE.upper()]
)
def test_requested_token_type_other_than_txn_token_is_refused_as_invalid_request(
    requested: str,
) -> None:
    error = refusal(form(requested_token_type=requested))
    assert (error.error, error.status) == ("invalid_request", 400)
    assert error.description == f"requested_token_type must be {TXN_TOKEN_TYPE}"


def test_refresh_token_subject_is_refused_naming_the_refresh_token() -> None:
    error = refusal(form(subject_token_type=REFRESH_TOKEN_TYPE))
    assert (error.error, error.status) == ("invalid_request", 400)
    assert error.description == "a refresh token cannot be a subject token"


@pytest.mark.parametrize(
    "token_type",
    [
        "urn:ietf:params:oauth:token-type:id_token",
        "urn:ietf:params:oauth:token-type:saml2",
        "urn:example:custom",
        ACCESS_TOKEN_TYPE.upper(),
    ],
)
def test_unknown_subject_token_type_is_refused_listing_the_accepted_ones(token_type: str) -> None:
    error = refusal(form(subject_token_type=token_type))
    assert (error.error, error.status) == ("invalid_request", 400)
    assert error.description.startswith("subject_token_type must be one of ")
    assert all(accepted in error.description for accepted in SUBJECT_TOKEN_TYPES)
    assert token_type not in error.description


# --- audience and resource ------------------------------------------------------------------


@pytest.mark.parametrize("resource", ["https://api.example/", "trust-domain.example"])
def test_resource_is_refused_as_invalid_target(resource: str) -> None:
    error = refusal(form(resource=resource))
    assert (error.error, error.status) == ("invalid_target", 400)
    assert error.description == "resource is not accepted; only audience names the trust domain"


def test_repeated_resource_is_refused_as_invalid_target() -> None:
    error = refusal(form() + b"&" + pairs(("resource", "a"), ("resource", "b")))
    assert error.error == "invalid_target"


@pytest.mark.parametrize("second", ["other-domain.example", "trust-domain.example"])
def test_more_than_one_audience_is_refused_as_invalid_target(second: str) -> None:
    error = refusal(form() + b"&" + pairs(("audience", second)))
    assert (error.error, error.status) == ("invalid_target", 400)


def test_audience_is_returned_unchecked_for_the_caller_to_match() -> None:
    assert parse(form(audience="spiffe://elsewhere.example")).audience == (
        "spiffe://elsewhere.example"
    )


# --- scope ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "tokens"),
    [
        ("trade.stocks", ("trade.stocks",)),
        ("a b c", ("a", "b", "c")),
        ("b a", ("b", "a")),
        ("a b a c b", ("a", "b", "c")),
        ("!#[]~ https://x.example/read", ("!#[]~", "https://x.example/read")),
    ],
)
def test_scope_parses_to_tokens_in_order_without_repeats(
    scope: str, tokens: tuple[str, ...]
) -> None:
    assert parse(form(scope=scope)).scope == tokens


@pytest.mark.parametrize(
    "scope",
    [" ", " a", "a ", "a  b", 'a"b', "a\\b", "a\tb", "a\nb", "caf\u00e9", "a\u00a0b", "a\x7fb"],
)
def test_malformed_scope_is_refused_as_invalid_scope(scope: str) -> None:
    error = refusal(form(scope=scope))
    assert (error.error, error.status) == ("invalid_scope", 400)


# --- request_context and request_details ----------------------------------------------------


@pytest.mark.parametrize("parameter", ["request_context", "request_details"])
def test_json_context_is_parsed_to_its_object(parameter: str) -> None:
    value = {
        "req_ip": "69.151.72.123",
        "nested": {"a": [1, 2.5, None, True]},
        "caf\u00e9": "\u2603",
    }
    request = parse(form(**{parameter: json.dumps(value)}))
    assert getattr(request, parameter) == value


def test_contexts_are_kept_apart() -> None:
    request = parse(form(request_context='{"rctx":1}', request_details='{"tctx":2}'))
    assert (request.request_context, request.request_details) == ({"rctx": 1}, {"tctx": 2})


@pytest.mark.parametrize("parameter", ["request_context", "request_details"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param("[]", id="array"),
        pytest.param('"text"', id="string"),
        pytest.param("42", id="number"),
        pytest.param("null", id="null"),
        pytest.param("true", id="boolean"),
        pytest.param("{", id="truncated"),
        pytest.param("{'a': 1}", id="single quotes"),
        pytest.param('{"a": 1} {"b": 2}', id="two documents"),
        pytest.param('{"a": 1, "a": 2}', id="duplicate member"),
        pytest.param('{"o": {"a": 1, "a": 1}}', id="nested duplicate member"),
        pytest.param('{"a": NaN}', id="NaN"),
        pytest.param('{"a": Infinity}', id="Infinity"),
        pytest.param('{"a": -Infinity}', id="negative Infinity"),
        pytest.param('{"a": 1e400}', id="float overflow"),
        pytest.param('{"a": "\\ud800"}', id="unpaired surrogate"),
        pytest.param('{"a": ' + "[" * 3000 + "]" * 3000 + "}", id="deep nesting"),
        pytest.param('{"a": ' + "1" * 5000 + "}", id="huge integer"),
    ],
)
def test_malformed_json_context_is_refused_as_invalid_request(parameter: str, value: str) -> None:
    error = refusal(form(**{parameter: value}))
    assert (error.error, error.status) == ("invalid_request", 400)
    assert error.description.startswith(parameter)


@pytest.mark.parametrize("parameter", ["request_context", "request_details"])
def test_json_context_over_the_limit_is_refused(parameter: str) -> None:
    value = '{"a":"' + "x" * 100 + '"}'
    assert getattr(parse(form(**{parameter: value}), max_json_bytes=len(value)), parameter)
    error = refusal(form(**{parameter: value}), max_json_bytes=len(value) - 1)
    assert (error.error, error.status) == ("invalid_request", 400)
    assert error.description == f"{parameter} is larger than {len(value) - 1} bytes"


def test_json_context_limit_counts_utf8_bytes() -> None:
    value = '{"a":"\u00e9\u00e9"}'  # 10 characters, 12 bytes
    assert parse(form(request_context=value), max_json_bytes=12).request_context == {
        "a": "\u00e9\u00e9"
    }
    error = refusal(form(request_context=value), max_json_bytes=11)
    assert error.description == "request_context is larger than 11 bytes"


# --- descriptions never leak ----------------------------------------------------------------

# Requests carrying SECRET as the subject token, each broken by some other rule.
BROKEN_ELSEWHERE = [
    pytest.param(form(grant_type="password"), id="grant"),
    pytest.param(form(grant_type=None), id="no grant"),
    pytest.param(form(actor_token=SECRET), id="actor"),
    pytest.param(form(requested_token_type=SECRET), id="requested type"),
    pytest.param(form(resource=SECRET), id="resource"),
    pytest.param(form(audience=None), id="no audience"),
    pytest.param(form(scope='a"' + SECRET), id="scope"),
    pytest.param(form(subject_token_type=SECRET), id="subject type"),
    pytest.param(form(subject_token_type=REFRESH_TOKEN_TYPE), id="refresh"),
    pytest.param(form(request_context=SECRET), id="context"),
    pytest.param(form(request_details='{"t":"' + SECRET + '","t":1}'), id="details"),
    pytest.param(form() + b"&subject_token=" + SECRET.encode(), id="repeated token"),
    pytest.param(form() + b"&" + SECRET.encode() + b"=1&" + SECRET.encode() + b"=2", id="name"),
    pytest.param(form() + b"&" + SECRET.encode(), id="field without equals"),
    pytest.param(form() + b"&x=%ff" + SECRET.encode(), id="bad utf-8"),
]


@pytest.mark.parametrize("body", BROKEN_ELSEWHERE)
def test_refusal_description_never_contains_the_subject_token(body: bytes) -> None:
    description = refusal(body).description
    assert SECRET not in description
    assert not any(SECRET[i : i + 12] in description for i in range(len(SECRET) - 11))


@st.composite
def broken_requests(draw: st.DrawFn) -> bytes:
    """The minimal request carrying SECRET, with arbitrary values for the other parameters."""
    names = sorted(set(MINIMAL) - {"subject_token"} | {"resource", "actor_token", "x"})
    changes = draw(
        st.dictionaries(
            st.sampled_from(names),
            st.none() | st.text(max_size=12) | st.sampled_from(['{"a":1}', SECRET[:20]]),
            min_size=1,
        )
    )
    return form(**changes)


@FAST
@given(broken_requests())
def test_no_refusal_description_contains_the_subject_token(body: bytes) -> None:
    result = outcome(body)
    if isinstance(result, ExchangeError):
        assert SECRET not in result.description
        assert SECRET[:20] not in result.description


@FAST
@given(st.binary(max_size=300), st.sampled_from([FORM, f"{FORM}; charset=utf-8", None]))
def test_arbitrary_bytes_only_ever_raise_exchange_error(body: bytes, content_type: str) -> None:
    result = outcome(body, content_type, max_body_bytes=200)
    if isinstance(result, ExchangeError):
        assert DESCRIPTION_CHARSET.fullmatch(result.description)
        assert result.status in (400, 413)


FORM_ALPHABET = st.sampled_from(
    [*"=&%+", "%ff", "%7B", "%7D", "%22", "grant_type", "scope", "audience", "subject_token"]
) | st.characters(min_codepoint=0x21, max_codepoint=0x7E)


@FAST
@given(st.lists(FORM_ALPHABET, max_size=60).map(lambda parts: "".join(parts).encode("ascii")))
def test_form_shaped_bytes_only_ever_raise_exchange_error(body: bytes) -> None:
    result = outcome(body)
    if isinstance(result, ExchangeError):
        assert DESCRIPTION_CHARSET.fullmatch(result.description)


@FAST
@given(st.dictionaries(st.sampled_from(sorted(MINIMAL)), st.text(max_size=30)))
def test_arbitrary_values_parse_or_raise_exchange_error(changes: dict[str, str]) -> None:
    body = urlencode({**MINIMAL, **changes}).encode("ascii")
    result = outcome(body)
    if isinstance(result, ExchangeError):
        assert DESCRIPTION_CHARSET.fullmatch(result.description)
    else:
        assert result.scope
        assert len(set(result.scope)) == len(result.scope)
        assert result.subject_token_type in SUBJECT_TOKEN_TYPES


# --- ExchangeError --------------------------------------------------------------------------


def test_exchange_error_defaults_to_400_and_carries_its_parts() -> None:
    error = ExchangeError("invalid_request", "scope is missing")
    assert (error.error, error.description, error.status) == (
        "invalid_request",
        "scope is missing",
        400,
    )
    assert str(error) == "invalid_request: scope is missing"


@pytest.mark.parametrize(
    ("error", "description", "status"),
    [
        ("invalid_request", 'a "quoted" word', 400),
        ("invalid_request", "a back\\slash", 400),
        ("invalid_request", "a line\nbreak", 400),
        ("invalid_request", "caf\u00e9", 400),
        ("invalid_request", "", 400),
        ('invalid"request', "fine", 400),
        ("", "fine", 400),
        ("invalid_request", "fine", 200),
        ("invalid_request", "fine", 302),
        ("invalid_request", "fine", 600),
    ],
)
def test_exchange_error_outside_the_rfc_6749_charset_or_status_range_is_a_programming_error(
    error: str, description: str, status: int
) -> None:
    with pytest.raises(ValueError, match=r"error|status"):
        ExchangeError(error, description, status)


# --- responses ------------------------------------------------------------------------------

HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"}


def test_success_response_is_the_txn_token_response() -> None:
    assert success_response("eyJ0eXAiOiJ0eG50b2tlbitqd3QifQ.e30.c2ln") == (
        200,
        HEADERS,
        b'{"access_token":"eyJ0eXAiOiJ0eG50b2tlbitqd3QifQ.e30.c2ln",'
        b'"issued_token_type":"urn:ietf:params:oauth:token-type:txn_token",'
        b'"token_type":"N_A"}',
    )


def test_success_response_never_carries_a_refresh_token_or_expiry() -> None:
    _, _, body = success_response("a.b.c")
    assert set(json.loads(body)) == {"access_token", "issued_token_type", "token_type"}


@pytest.mark.parametrize("token", ["", "a.b.c\n", "a.b.\u00e9"])
def test_success_response_refuses_a_token_that_is_not_vschar(token: str) -> None:
    with pytest.raises(ValueError, match="Txn-Token"):
        success_response(token)


def test_error_response_carries_the_error_and_its_status() -> None:
    assert error_response(ExchangeError("invalid_request", "scope is missing")) == (
        400,
        HEADERS,
        b'{"error":"invalid_request","error_description":"scope is missing"}',
    )


def test_error_response_keeps_a_non_400_status() -> None:
    status, headers, body = error_response(
        ExchangeError("invalid_client", "the requester is not authenticated", 401)
    )
    assert (status, headers) == (401, HEADERS)
    assert json.loads(body) == {
        "error": "invalid_client",
        "error_description": "the requester is not authenticated",
    }


def test_error_response_of_an_oversized_body_is_413() -> None:
    status, _, body = error_response(refusal(form(), max_body_bytes=10))
    assert status == 413
    assert json.loads(body)["error"] == "invalid_request"


def test_each_response_gets_its_own_headers_dict() -> None:
    first = success_response("a.b.c")[1]
    first["X-Extra"] = "1"
    assert success_response("a.b.c")[1] == HEADERS

"""The RFC 8941 subset HTTP Message Signatures use: what parses, what is refused, and the
canonical serialisation signed as `@signature-params`."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.credentials.httpsig.structured_fields import (
    MAX_DICTIONARY_MEMBERS,
    MAX_INNER_LIST_ITEMS,
    InnerList,
    Item,
    StructuredFieldError,
    Token,
    parse_dictionary,
    parse_item,
    serialize_inner_list,
)


def test_a_signature_input_member_parses_into_components_and_parameters() -> None:
    members = parse_dictionary(
        'sig1=("@method" "@path";req "x-a");created=1789405135;nonce="ab\\"c";'
        "tag=token/x;flag;off=?0;d=1.5;b=:AAE=:"
    )
    inner = members["sig1"]
    assert isinstance(inner, InnerList)
    assert [item.value for item in inner.items] == ["@method", "@path", "x-a"]
    assert inner.items[1].params == {"req": True}
    assert inner.params == {
        "created": 1789405135,
        "nonce": 'ab"c',
        "tag": Token("token/x"),
        "flag": True,
        "off": False,
        "d": Decimal("1.5"),
        "b": b"\x00\x01",
    }


def test_serialisation_is_canonical_whatever_the_spacing() -> None:
    inner = parse_dictionary('a=(  "@method"   "x" );created=1;n="v"')["a"]
    assert isinstance(inner, InnerList)
    assert serialize_inner_list(inner) == '("@method" "x");created=1;n="v"'


@pytest.mark.parametrize(
    "text",
    [
        'sig1=("@method");created=1789405135;expires=1789405435;nonce="abcd1111";'
        'tag="wimse-workload-to-workload";wimse-aud="https://svcb.example.com/x";'
        "wimse-sign-response",
        '("@status" "content-digest" "@method";req);created=1;nonce="a\\\\b"',
        '();alg="ed25519";keyid=":x:"',
    ],
)
def test_canonical_text_round_trips(text: str) -> None:
    label, _, value = text.partition("=") if text.startswith("sig1") else ("x", "", text)
    inner = parse_dictionary(f"{label}={value}")[label]
    assert isinstance(inner, InnerList)
    assert serialize_inner_list(inner) == value


@pytest.mark.parametrize(
    "text",
    [
        "a=1, a=2",  # a repeated key: RFC 8941 keeps the last, we refuse
        'a=("x");p=1;p=2',  # a repeated parameter
        "A=1",  # keys are lower-case
        "a=1,",  # trailing comma
        "a=1,,b=2",
        'a="unterminated',
        'a="bad \\n escape"',
        'a="tab\tinside"',
        "a=:not base64!:",
        "a=?2",
        "a=1234567890123456",  # over 15 digits
        "a=1.2345",  # over 3 fractional digits
        'a=("x" "y"',  # unclosed inner list
        'a=("x""y")',  # items need a space between them
        "a=caf\u00e9",  # not ASCII
        "a=@x",
    ],
)
def test_invalid_dictionaries_are_refused(text: str) -> None:
    with pytest.raises(StructuredFieldError):
        parse_dictionary(text)


def test_dictionary_size_is_bounded() -> None:
    many = ", ".join(f"k{i}=1" for i in range(MAX_DICTIONARY_MEMBERS + 1))
    with pytest.raises(StructuredFieldError, match="too many"):
        parse_dictionary(many)


def test_inner_list_size_is_bounded() -> None:
    items = " ".join(f'"h{i}"' for i in range(MAX_INNER_LIST_ITEMS + 1))
    with pytest.raises(StructuredFieldError, match="too many"):
        parse_dictionary(f"a=({items})")


def test_a_component_identifier_parses_as_an_item() -> None:
    assert parse_item('"@query-param";name="a"') == Item("@query-param", {"name": "a"})
    with pytest.raises(StructuredFieldError):
        parse_item('"@method" extra')


@given(st.text(max_size=200))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    with contextlib.suppress(StructuredFieldError):
        parse_dictionary(text)


@given(
    st.lists(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
        max_size=MAX_INNER_LIST_ITEMS,
    ),
    st.integers(min_value=0, max_value=10**15 - 1),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)
def test_serialised_inner_lists_parse_back_to_themselves(
    names: list[str], created: int, nonce: str
) -> None:
    inner = InnerList(tuple(Item(name, {}) for name in names), {"created": created, "nonce": nonce})
    parsed = parse_dictionary("sig=" + serialize_inner_list(inner))["sig"]
    assert parsed == inner

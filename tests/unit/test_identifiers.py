from __future__ import annotations

import pytest

from authz.credentials.identifiers import (
    InvalidIdentifier,
    is_valid_trust_domain,
    parse_workload_id,
)


@pytest.mark.parametrize(
    ("uri", "scheme", "trust_domain", "path"),
    [
        ("spiffe://example.org/ns/prod/sa/orders", "spiffe", "example.org", "/ns/prod/sa/orders"),
        ("wimse://example.com/specific-workload", "wimse", "example.com", "/specific-workload"),
        ("wimse://td.example/a/b:c@d", "wimse", "td.example", "/a/b:c@d"),
        ("spiffe://my_td-1.example/w", "spiffe", "my_td-1.example", "/w"),
    ],
)
def test_canonical_identifiers_parse_into_their_parts(
    uri: str, scheme: str, trust_domain: str, path: str
) -> None:
    identity = parse_workload_id(uri)
    assert (identity.uri, identity.scheme, identity.trust_domain, identity.path) == (
        uri,
        scheme,
        trust_domain,
        path,
    )


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("SPIFFE://example.org/w", "scheme is not"),
        ("https://example.org/w", "scheme is not"),
        ("spiffe://Example.org/w", "lowercase"),
        ("spiffe://example.org:8443/w", "lowercase"),
        ("spiffe://user@example.org/w", "lowercase"),
        ("spiffe://ex%41mple.org/w", "lowercase"),
        ("spiffe://example.org", "needs a path"),
        ("spiffe://example.org/", "needs a path"),
        ("spiffe:///w", "trust domain is empty"),
        ("spiffe://example.org/w/", "trailing slash"),
        ("spiffe://example.org//w", "empty segment"),
        ("spiffe://example.org/a/../b", "'.' or '..'"),
        ("spiffe://example.org/a/./b", "'.' or '..'"),
        ("spiffe://example.org/w?x=1", "query or fragment"),
        ("spiffe://example.org/w#frag", "query or fragment"),
        ("spiffe://example.org/w%20x", "not allowed"),
        ("spiffe://example.org/w:x", "not allowed"),
        ("wimse://example.org/w%2Fx", "not allowed"),
        ("wimse://example.org/wörk", "non-ASCII"),
        ("spiffe://example.org/" + "a" * 2048, "longer than"),
        ("spiffe://" + "a" * 256 + "/w", "too long"),
    ],
)
def test_non_canonical_identifiers_are_rejected_not_repaired(value: str, why: str) -> None:
    with pytest.raises(InvalidIdentifier, match=why):
        parse_workload_id(value)


@pytest.mark.parametrize("value", [None, 42, ["spiffe://example.org/w"], b"spiffe://e/w"])
def test_non_strings_are_not_identifiers(value: object) -> None:
    with pytest.raises(InvalidIdentifier, match="not a string"):
        parse_workload_id(value)


def test_trust_domain_names_must_be_lowercase_and_plain() -> None:
    assert is_valid_trust_domain("prod.example.com")
    assert not is_valid_trust_domain("Prod.example.com")
    assert not is_valid_trust_domain("")
    assert not is_valid_trust_domain("example.com:443")

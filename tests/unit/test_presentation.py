from __future__ import annotations

import pytest

from authz.credentials.presentation import ProofStyle, SizeLimits, proof_style, read_credentials
from authz.errors import CredentialError
from authz.reasons import Reason

LIMITS = SizeLimits(token_header_bytes=100, credential_headers_bytes=250)


def reason(headers: dict[str, str], *, legacy: bool = False, limits: SizeLimits = LIMITS) -> Reason:
    with pytest.raises(CredentialError) as caught:
        read_credentials(headers, limits, legacy_wpt=legacy)
    return caught.value.reason


def test_wit_and_wpt_are_found() -> None:
    found = read_credentials(
        {"workload-identity-token": "a.b.c", "authorization": "WPT d.e.f"}, LIMITS, legacy_wpt=False
    )
    assert (found.wit, found.wpt, found.legacy_form) == ("a.b.c", "d.e.f", False)
    assert proof_style({"workload-identity-token": "a.b.c", "authorization": "WPT d.e.f"}) is (
        ProofStyle.WPT
    )


@pytest.mark.parametrize("scheme", ["WPT", "wpt", "Wpt"])
def test_wpt_scheme_is_case_insensitive(scheme: str) -> None:
    found = read_credentials({"authorization": f"{scheme} d.e.f"}, LIMITS, legacy_wpt=False)
    assert found.wpt == "d.e.f"


def test_bearer_tokens_are_not_proofs() -> None:
    found = read_credentials({"authorization": "Bearer xyz"}, LIMITS, legacy_wpt=False)
    assert found.wpt is None
    assert found.legacy_bearer is None, "only the pre-02 form binds an access token"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"workload-identity-token": "a.b.c,d.e.f"}, Reason.WIT_MULTIPLE),
        ({"authorization": "WPT a.b.c,WPT d.e.f"}, Reason.WPT_MULTIPLE),
        ({"authorization": "Bearer x,WPT d.e.f"}, Reason.WPT_MULTIPLE),
        ({"authorization": "WPT a.b.c, Bearer x"}, Reason.WPT_MULTIPLE),
        ({"authorization": "WPT"}, Reason.WPT_MALFORMED),
        ({"authorization": "WPT a.b.c extra"}, Reason.WPT_MALFORMED),
        ({"workload-identity-token": "x" * 101}, Reason.WIT_TOO_LARGE),
        ({"authorization": "WPT " + "x" * 101}, Reason.WPT_TOO_LARGE),
        ({"txn-token": "x" * 101}, Reason.TXN_TOO_LARGE),
        (
            {
                "workload-identity-token": "x" * 90,
                "authorization": "WPT " + "y" * 90,
                "txn-token": "z" * 90,
            },
            Reason.CREDENTIALS_TOO_LARGE,
        ),
        (
            {"authorization": "WPT a.b.c", "signature": "sig1=:x:", "signature-input": "sig1=()"},
            Reason.CREDENTIALS_AMBIGUOUS,
        ),
    ],
)
def test_refusals(headers: dict[str, str], expected: Reason) -> None:
    assert reason(headers) is expected


def test_sizes_count_bytes_not_characters() -> None:
    wit = "é" * 60  # 60 characters, 120 bytes
    assert reason({"workload-identity-token": wit}) is Reason.WIT_TOO_LARGE


def test_legacy_header_is_only_noted_when_disabled() -> None:
    found = read_credentials({"workload-proof-token": "a.b.c"}, LIMITS, legacy_wpt=False)
    assert found.wpt is None
    assert found.legacy_header_refused


def test_legacy_header_is_the_proof_when_enabled() -> None:
    found = read_credentials(
        {"workload-proof-token": "a.b.c", "authorization": "Bearer tok"}, LIMITS, legacy_wpt=True
    )
    assert (found.wpt, found.legacy_form, found.legacy_bearer) == ("a.b.c", True, "tok")


def test_legacy_and_current_forms_together_are_ambiguous() -> None:
    headers = {"workload-proof-token": "a.b.c", "authorization": "WPT d.e.f"}
    assert reason(headers, legacy=True) is Reason.CREDENTIALS_AMBIGUOUS


def test_signature_headers_mark_http_signature_style() -> None:
    found = read_credentials({"signature-input": "sig1=()"}, LIMITS, legacy_wpt=False)
    assert found.signature
    assert proof_style({"signature-input": "sig1=()"}) is ProofStyle.HTTP_SIGNATURE
    assert proof_style({"signature": "sig1=:x:", "authorization": "Bearer t"}) is (
        ProofStyle.HTTP_SIGNATURE
    )
    assert proof_style({"signature": "sig1=:x:", "authorization": "WPT a.b.c"}) is ProofStyle.WPT


def test_context_headers_count_towards_the_total() -> None:
    headers = {
        "x-user": "u" * 99,
        "workload-identity-token": "w" * 99,
        "authorization": "WPT " + "p" * 60,
    }
    with pytest.raises(CredentialError) as caught:
        read_credentials(headers, LIMITS, legacy_wpt=False, context_headers=("x-user",))
    assert caught.value.reason is Reason.CREDENTIALS_TOO_LARGE

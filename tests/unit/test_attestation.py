"""Attestation results (RATS EAR): verification, normalisation, status ranking, freshness.

`ear.unbound` and `ear.subject_mismatch` are the context stage's (see `test_context.py`).
"""

from __future__ import annotations

from typing import Any

import pytest

from authz.credentials.algorithms import public_key_from_jwk
from authz.credentials.attestation import (
    MAX_SUBMODS,
    AttestationResult,
    AttestationSource,
    EarRules,
    EarStatus,
    EarVerifier,
    worst,
)
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import ear_claims, mint_ear, sign_jws
from authz.errors import CredentialError
from authz.reasons import Reason
from authz.trust.key_sets import KeySet, build_key_set
from tests.support import MutableClock

NOW = 1_800_000_000
MAX_AGE = 3600
SKEW = 30
VERIFIER = generate_private_jwk("ES256", kid="verifier-1")
SECOND_VERIFIER = generate_private_jwk("ES256", kid="verifier-2")
UNTRUSTED = generate_private_jwk("ES256", kid="verifier-1")
ES384_KEY = generate_private_jwk("ES384", kid="verifier-1")
# A submod status given as this marker is left out of the submod altogether.
NO_STATUS = object()


def key_set(name: str, private: dict[str, Any]) -> KeySet:
    algorithms = frozenset({"ES256"})
    return build_key_set(name, algorithms, [public_key_from_jwk(public_jwk(private), algorithms)])


def ear_verifier(*, verifiers: tuple[KeySet, ...] | None = None) -> EarVerifier:
    if verifiers is None:
        verifiers = (key_set("veraison", VERIFIER), key_set("second", SECOND_VERIFIER))
    return EarVerifier(verifiers, EarRules(clock_skew=SKEW, max_age=MAX_AGE), MutableClock(NOW))


def submod(status: object = "affirming", **members: Any) -> dict[str, Any]:
    appraisal: dict[str, Any] = {"ear_trustworthiness_vector": {"executables": 2}, **members}
    if status is not NO_STATUS:
        appraisal["ear_status"] = status
    return appraisal


def ear(*statuses: object, **overrides: Any) -> dict[str, Any]:
    """EAR claims with one submod per status (default one affirming); None removes a claim."""
    claims: dict[str, Any] = {
        "eat_profile": "tag:ietf.org,2026:rats/ear#03",
        "iat": NOW - 60,
        "ear_verifier_id": {"developer": "https://veraison-project.org", "build": "vts 0.0.1"},
        "submods": {f"m{i}": submod(status) for i, status in enumerate(statuses or ["affirming"])},
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def from_object(claims: dict[str, Any]) -> AttestationResult:
    return ear_verifier().from_claim(claims, AttestationSource.WIT)


def status_of(claims: dict[str, Any]) -> EarStatus:
    return from_object(claims).status


def refusal(claims: dict[str, Any]) -> Reason:
    with pytest.raises(CredentialError) as caught:
        from_object(claims)
    return caught.value.reason


def jwt_refusal(token: str, verifier: EarVerifier | None = None) -> Reason:
    with pytest.raises(CredentialError) as caught:
        (verifier or ear_verifier()).from_jwt(token, AttestationSource.HEADER)
    return caught.value.reason


def signed(claims: dict[str, Any], key: dict[str, Any] = VERIFIER, **header: Any) -> str:
    return sign_jws(claims, key, {"typ": "JWT", "kid": key["kid"], **header})


# --- status ranking -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["affirming"], EarStatus.AFFIRMING),
        (["affirming", "affirming"], EarStatus.AFFIRMING),
        (["affirming", "none"], EarStatus.NONE),
        (["none", "warning", "affirming"], EarStatus.WARNING),
        (["warning", "contraindicated", "affirming"], EarStatus.CONTRAINDICATED),
        (["contraindicated", "none"], EarStatus.CONTRAINDICATED),
    ],
)
def test_result_status_is_the_worst_submod(statuses: list[str], expected: EarStatus) -> None:
    assert status_of(ear(*statuses)) is expected


def test_worst_ranks_contraindicated_over_warning_over_none_over_affirming() -> None:
    ranked = [EarStatus.AFFIRMING, EarStatus.NONE, EarStatus.WARNING, EarStatus.CONTRAINDICATED]
    for index in range(1, len(ranked)):
        assert worst(ranked[: index + 1]) is ranked[index]
        assert worst(reversed(ranked[: index + 1])) is ranked[index]
    assert worst([]) is EarStatus.NONE, "nothing to go on is not affirming"


def test_a_submod_without_status_is_none_and_not_hidden_by_an_affirming_one() -> None:
    result = from_object(ear("affirming", NO_STATUS))
    assert result.submods["m1"].status is EarStatus.NONE
    assert result.status is EarStatus.NONE


def test_an_affirming_top_level_status_does_not_hide_a_worse_submod() -> None:
    assert status_of(ear("affirming", "warning", ear_status="affirming")) is EarStatus.WARNING
    assert status_of(ear("affirming", NO_STATUS, ear_status="affirming")) is EarStatus.NONE


@pytest.mark.parametrize(
    ("top_level", "expected"),
    [
        ("warning", EarStatus.WARNING),
        ("contraindicated", EarStatus.CONTRAINDICATED),
        ("none", EarStatus.NONE),
        (96, EarStatus.CONTRAINDICATED),
    ],
)
def test_a_worse_top_level_status_lowers_all_affirming_submods(
    top_level: object, expected: EarStatus
) -> None:
    assert status_of(ear("affirming", "affirming", ear_status=top_level)) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, EarStatus.NONE),
        (2, EarStatus.AFFIRMING),
        (32, EarStatus.WARNING),
        (96, EarStatus.CONTRAINDICATED),
    ],
)
def test_integer_statuses_use_the_ar4si_tier_codes(value: int, expected: EarStatus) -> None:
    assert status_of(ear(value)) is expected


@pytest.mark.parametrize("value", [1, 3, 33, 97, -2, 2.0, True, "Affirming", "ok", [2]])
def test_an_unknown_status_is_invalid(value: object) -> None:
    assert refusal(ear(value)) is Reason.EAR_CLAIM_INVALID
    assert refusal(ear("affirming", ear_status=value)) is Reason.EAR_CLAIM_INVALID


# --- names: current and legacy ------------------------------------------------------------


def test_legacy_dotted_names_are_normalised_to_the_same_shape() -> None:
    legacy = {
        "eat_profile": "tag:ietf.org,2025-07:ear",
        "iat": NOW - 60,
        "ear.verifier-id": {"developer": "https://veraison-project.org"},
        "ear.status": "warning",
        "submods": {
            "PSA": {
                "ear.status": "affirming",
                "ear.trustworthiness-vector": {"hardware": 2, "executables": 3},
                "ear.appraisal-policy-id": "https://veraison.example/policy/1",
            }
        },
    }
    result = from_object(legacy)
    assert result.status is EarStatus.WARNING, "the legacy top-level status is read too"
    assert result.verifier == {"developer": "https://veraison-project.org"}
    psa = result.submods["PSA"]
    assert psa.status is EarStatus.AFFIRMING
    assert dict(psa.trustworthiness) == {"hardware": 2, "executables": 3}
    assert psa.policy_ids == ("https://veraison.example/policy/1",)


def test_current_names_are_normalised() -> None:
    claims = ear(sub="spiffe://demo.example/frontend", exp=NOW + 600)
    claims["submods"]["m0"]["ear_appraisal_policy_ids"] = ["p1", "p2"]
    result = ear_verifier().from_claim(claims, AttestationSource.TXN)
    assert result.source is AttestationSource.TXN
    assert (result.status, result.fresh) == (EarStatus.AFFIRMING, True)
    assert result.profile == "tag:ietf.org,2026:rats/ear#03"
    assert (result.issued_at, result.expires_at) == (NOW - 60, NOW + 600)
    assert result.verifier == {"developer": "https://veraison-project.org", "build": "vts 0.0.1"}
    assert result.signed_by is None, "an object is vouched for by the token carrying it"
    assert result.subject == "spiffe://demo.example/frontend"
    assert result.submods["m0"].policy_ids == ("p1", "p2")
    assert dict(result.submods["m0"].trustworthiness) == {"executables": 2}


@pytest.mark.parametrize(
    ("current", "legacy", "value"),
    [
        ("ear_status", "ear.status", "affirming"),
        ("ear_trustworthiness_vector", "ear.trustworthiness-vector", {"hardware": 2}),
        ("ear_appraisal_policy_ids", "ear.appraisal-policy-id", ["p"]),
    ],
)
def test_a_submod_with_both_names_for_one_field_is_ambiguous(
    current: str, legacy: str, value: object
) -> None:
    claims = ear()
    claims["submods"]["m0"].update({current: value, legacy: value})
    assert refusal(claims) is Reason.EAR_CLAIM_INVALID


@pytest.mark.parametrize(
    ("current", "legacy", "value"),
    [
        ("ear_status", "ear.status", "affirming"),
        ("ear_verifier_id", "ear.verifier-id", {"developer": "x"}),
    ],
)
def test_a_result_with_both_names_for_one_field_is_ambiguous(
    current: str, legacy: str, value: object
) -> None:
    assert refusal(ear(**{current: value, legacy: value})) is Reason.EAR_CLAIM_INVALID


# --- freshness ----------------------------------------------------------------------------


def test_a_result_within_max_age_is_fresh() -> None:
    result = from_object(ear(iat=NOW - MAX_AGE))
    assert (result.fresh, result.status) == (True, EarStatus.AFFIRMING)


@pytest.mark.parametrize(
    "overrides",
    [{"iat": NOW - MAX_AGE - SKEW - 1}, {"exp": NOW - SKEW - 1}],
    ids=["older than max_age", "past exp"],
)
def test_a_stale_affirming_result_counts_as_none(overrides: dict[str, Any]) -> None:
    result = from_object(ear("affirming", **overrides))
    assert (result.fresh, result.status) == (False, EarStatus.NONE)


@pytest.mark.parametrize("status", ["warning", "contraindicated"])
def test_staleness_never_improves_a_worse_status(status: str) -> None:
    result = from_object(ear(status, iat=NOW - 2 * MAX_AGE))
    assert (result.fresh, result.status) == (False, EarStatus(status))


def test_exp_within_the_clock_skew_is_still_fresh() -> None:
    assert from_object(ear(exp=NOW - SKEW + 1)).fresh is True


def test_iat_in_the_future_is_refused_beyond_the_skew() -> None:
    assert refusal(ear(iat=NOW + SKEW + 1)) is Reason.EAR_IAT_IN_FUTURE
    assert from_object(ear(iat=NOW + SKEW - 1)).status is EarStatus.AFFIRMING


# --- claim validity -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"eat_profile": None},
        {"eat_profile": 3},
        {"iat": None},
        {"iat": "yesterday"},
        {"exp": "tomorrow"},
        {"ear_verifier_id": "veraison"},
        {"sub": 5},
        {"submods": None},
        {"submods": {}},
        {"submods": ["m0"]},
        {"submods": {"m0": "affirming"}},
        {"submods": {"m0": submod(ear_appraisal_policy_ids=[1])}},
        {"submods": {"m0": submod(ear_appraisal_policy_ids={"p": 1})}},
    ],
    ids=lambda overrides: ",".join(f"{k}={v!r}" for k, v in overrides.items()),
)
def test_invalid_result_claims_are_refused(overrides: dict[str, Any]) -> None:
    assert refusal(ear(**overrides)) is Reason.EAR_CLAIM_INVALID


@pytest.mark.parametrize("value", ["2", 2.5, True, None, 128, -129, [2]])
def test_a_trustworthiness_claim_must_be_an_integer_in_the_ar4si_range(value: object) -> None:
    claims = ear(submods={"m0": submod(ear_trustworthiness_vector={"hardware": value})})
    assert refusal(claims) is Reason.EAR_CLAIM_INVALID


def test_trustworthiness_claims_at_the_range_ends_are_accepted() -> None:
    vector = {"hardware": 127, "executables": -128}
    claims = ear(submods={"m0": submod(ear_trustworthiness_vector=vector)})
    assert dict(from_object(claims).submods["m0"].trustworthiness) == vector


def test_a_trustworthiness_vector_must_be_an_object() -> None:
    claims = ear(submods={"m0": submod(ear_trustworthiness_vector=[2, 2])})
    assert refusal(claims) is Reason.EAR_CLAIM_INVALID


def test_submods_are_bounded() -> None:
    at_limit = {f"m{i}": submod() for i in range(MAX_SUBMODS)}
    assert len(from_object(ear(submods=at_limit)).submods) == MAX_SUBMODS
    over = {f"m{i}": submod() for i in range(MAX_SUBMODS + 1)}
    assert refusal(ear(submods=over)) is Reason.EAR_CLAIM_INVALID


# --- EAR JWTs -----------------------------------------------------------------------------


def test_an_ear_jwt_from_a_configured_verifier_is_verified_and_names_its_signer() -> None:
    result = ear_verifier().from_jwt(signed(ear("warning")), AttestationSource.HEADER)
    assert (result.source, result.status, result.signed_by) == (
        AttestationSource.HEADER,
        EarStatus.WARNING,
        "veraison",
    )
    second = ear_verifier().from_jwt(signed(ear(), SECOND_VERIFIER), AttestationSource.HEADER)
    assert second.signed_by == "second"


def test_an_ear_minted_by_the_dev_verifier_verifies() -> None:
    claims = ear_claims({"CPU": ("affirming", {"hardware": 2})}, now=NOW)
    assert ear_verifier().from_jwt(mint_ear(VERIFIER, claims), AttestationSource.HEADER).status is (
        EarStatus.AFFIRMING
    )


def test_an_ear_jwt_is_normalised_like_an_object() -> None:
    claims = ear("affirming", "warning", exp=NOW + 60)
    as_jwt = ear_verifier().from_jwt(signed(claims), AttestationSource.HEADER)
    as_object = ear_verifier().from_claim(claims, AttestationSource.HEADER)
    assert (as_jwt.status, as_jwt.submods, as_jwt.issued_at, as_jwt.expires_at) == (
        as_object.status,
        as_object.submods,
        as_object.issued_at,
        as_object.expires_at,
    )


VALID_JWT = signed(ear())
JWT_REFUSALS: dict[str, tuple[str, Reason]] = {
    "two headers joined": (f"{VALID_JWT},{VALID_JWT}", Reason.EAR_MULTIPLE),
    "not a JWS": ("a.b", Reason.EAR_MALFORMED),
    "kid a number": (signed(ear(), kid=3), Reason.EAR_MALFORMED),
    "header jwk": (signed(ear(), jwk=public_jwk(VERIFIER)), Reason.EAR_HEADER_KEY_FORBIDDEN),
    "crit": (signed(ear(), crit=["iat"]), Reason.EAR_CRIT_UNSUPPORTED),
    "b64": (signed(ear(), b64=False), Reason.EAR_B64_UNSUPPORTED),
    "alg not allowed": (signed(ear(), ES384_KEY), Reason.EAR_ALG_NOT_ALLOWED),
    "kid unknown": (signed(ear(), kid="verifier-9"), Reason.EAR_VERIFIER_UNKNOWN),
    "untrusted key with a configured kid": (signed(ear(), UNTRUSTED), Reason.EAR_SIGNATURE_INVALID),
    "untrusted key, no kid": (signed(ear(), UNTRUSTED, kid=None), Reason.EAR_SIGNATURE_INVALID),
    "signed but invalid claims": (signed(ear(submods={})), Reason.EAR_CLAIM_INVALID),
    "signed but issued in the future": (signed(ear(iat=NOW + 600)), Reason.EAR_IAT_IN_FUTURE),
}


@pytest.mark.parametrize(("token", "expected"), JWT_REFUSALS.values(), ids=JWT_REFUSALS.keys())
def test_refused_ear_jwt_names_the_failed_check(token: str, expected: Reason) -> None:
    assert jwt_refusal(token) is expected


def test_every_ear_reason_code_of_the_verifier_has_a_refusal_case() -> None:
    context_codes = {Reason.EAR_UNBOUND, Reason.EAR_SUBJECT_MISMATCH, Reason.EAR_SUBJECT_MISSING}
    verifier_codes = {code for code in Reason if code.startswith("ear.")} - context_codes
    assert {expected for _, expected in JWT_REFUSALS.values()} == verifier_codes


def test_an_ear_jwt_without_any_configured_verifier_has_an_unknown_verifier() -> None:
    assert jwt_refusal(VALID_JWT, ear_verifier(verifiers=())) is Reason.EAR_VERIFIER_UNKNOWN


def test_without_kid_each_verifiers_keys_are_tried() -> None:
    result = ear_verifier().from_jwt(
        signed(ear(), SECOND_VERIFIER, kid=None), AttestationSource.WIT
    )
    assert result.signed_by == "second"


# --- from_claim: object or nested JWT ------------------------------------------------------


def test_from_claim_verifies_a_string_as_a_nested_ear_jwt() -> None:
    result = ear_verifier().from_claim(signed(ear("warning")), AttestationSource.TXN)
    assert (result.source, result.status, result.signed_by) == (
        AttestationSource.TXN,
        EarStatus.WARNING,
        "veraison",
    )


def test_from_claim_does_not_trust_a_nested_jwt_from_an_unknown_signer() -> None:
    with pytest.raises(CredentialError) as caught:
        ear_verifier().from_claim(signed(ear(), UNTRUSTED), AttestationSource.WIT)
    assert caught.value.reason is Reason.EAR_SIGNATURE_INVALID


@pytest.mark.parametrize("value", [5, True, [ear()], None])
def test_from_claim_refuses_anything_but_a_jwt_or_an_object(value: object) -> None:
    with pytest.raises(CredentialError) as caught:
        ear_verifier().from_claim(value, AttestationSource.WIT)
    assert caught.value.reason is Reason.EAR_MALFORMED

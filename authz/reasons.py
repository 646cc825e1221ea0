"""The machine reason codes every deny, log line and metric uses.

A reason code names the first check that failed. Codes are stable API: policies, dashboards
and alerting key on them, so a code is never renamed, only added. `docs/reasons.md` lists
them all with their meaning; a test keeps that page and this enum in step.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # --- the request itself -------------------------------------------------------------
    REQUEST_MALFORMED = "request.malformed"
    REQUEST_PATH_INVALID = "request.path_invalid"
    REQUEST_BODY_INVALID = "request.body_invalid"
    CREDENTIALS_TOO_LARGE = "credentials.too_large"
    CREDENTIALS_AMBIGUOUS = "credentials.ambiguous"

    # --- Workload Identity Token (draft-ietf-wimse-workload-creds) ----------------------
    WIT_MISSING = "wit.missing"
    WIT_MULTIPLE = "wit.multiple"
    WIT_TOO_LARGE = "wit.too_large"
    WIT_MALFORMED = "wit.malformed"
    WIT_HEADER_KEY_FORBIDDEN = "wit.header_key_forbidden"
    WIT_CRIT_UNSUPPORTED = "wit.crit_unsupported"
    WIT_B64_UNSUPPORTED = "wit.b64_unsupported"
    WIT_TYP_INVALID = "wit.typ_invalid"
    WIT_SUB_INVALID = "wit.sub_invalid"
    WIT_TRUST_DOMAIN_UNKNOWN = "wit.trust_domain_unknown"
    WIT_ALG_NOT_ALLOWED = "wit.alg_not_allowed"
    WIT_KID_UNKNOWN = "wit.kid_unknown"
    WIT_SIGNATURE_INVALID = "wit.signature_invalid"
    WIT_EXP_MISSING = "wit.exp_missing"
    WIT_EXPIRED = "wit.expired"
    WIT_EXP_TOO_FAR = "wit.exp_too_far"
    WIT_CLAIM_INVALID = "wit.claim_invalid"
    WIT_IAT_IN_FUTURE = "wit.iat_in_future"
    WIT_NOT_YET_VALID = "wit.not_yet_valid"
    WIT_LIFETIME_EXCEEDED = "wit.lifetime_exceeded"
    WIT_CNF_MISSING = "wit.cnf_missing"
    WIT_CNF_ALG_MISSING = "wit.cnf_alg_missing"
    WIT_CNF_ALG_NOT_ALLOWED = "wit.cnf_alg_not_allowed"
    WIT_CNF_KEY_INVALID = "wit.cnf_key_invalid"

    # --- Workload Proof Token (draft-ietf-wimse-wpt-02) ---------------------------------
    WPT_MISSING = "wpt.missing"
    WPT_MULTIPLE = "wpt.multiple"
    WPT_TOO_LARGE = "wpt.too_large"
    WPT_LEGACY_FORM_DISABLED = "wpt.legacy_form_disabled"
    WPT_MALFORMED = "wpt.malformed"
    WPT_HEADER_KEY_FORBIDDEN = "wpt.header_key_forbidden"
    WPT_CRIT_UNSUPPORTED = "wpt.crit_unsupported"
    WPT_B64_UNSUPPORTED = "wpt.b64_unsupported"
    WPT_ALG_MISMATCH = "wpt.alg_mismatch"
    WPT_SIGNATURE_INVALID = "wpt.signature_invalid"
    WPT_TYP_INVALID = "wpt.typ_invalid"
    WPT_AUD_INVALID = "wpt.aud_invalid"
    WPT_AUD_MISMATCH = "wpt.aud_mismatch"
    WPT_EXP_MISSING = "wpt.exp_missing"
    WPT_EXPIRED = "wpt.expired"
    WPT_EXP_TOO_FAR = "wpt.exp_too_far"
    WPT_CLAIM_INVALID = "wpt.claim_invalid"
    WPT_IAT_IN_FUTURE = "wpt.iat_in_future"
    WPT_LIFETIME_EXCEEDED = "wpt.lifetime_exceeded"
    WPT_WTH_MISSING = "wpt.wth_missing"
    WPT_WTH_MISMATCH = "wpt.wth_mismatch"
    WPT_JTI_MISSING = "wpt.jti_missing"
    WPT_REPLAYED = "wpt.replayed"
    WPT_TTH_MISSING = "wpt.tth_missing"
    WPT_TTH_MISMATCH = "wpt.tth_mismatch"
    WPT_TTH_UNBOUND = "wpt.tth_unbound"
    WPT_OTH_INVALID = "wpt.oth_invalid"
    WPT_OTH_UNKNOWN_HEADER = "wpt.oth_unknown_header"
    WPT_OTH_HEADER_MISSING = "wpt.oth_header_missing"
    WPT_OTH_MISMATCH = "wpt.oth_mismatch"
    WPT_ATH_MISSING = "wpt.ath_missing"
    WPT_ATH_MISMATCH = "wpt.ath_mismatch"

    # --- Transaction Token (draft-ietf-oauth-transaction-tokens-10) ----------------------
    TXN_MISSING = "txn.missing"
    TXN_MULTIPLE = "txn.multiple"
    TXN_TOO_LARGE = "txn.too_large"
    TXN_MALFORMED = "txn.malformed"
    TXN_HEADER_KEY_FORBIDDEN = "txn.header_key_forbidden"
    TXN_CRIT_UNSUPPORTED = "txn.crit_unsupported"
    TXN_B64_UNSUPPORTED = "txn.b64_unsupported"
    TXN_TYP_INVALID = "txn.typ_invalid"
    TXN_LEGACY_FORM_DISABLED = "txn.legacy_form_disabled"
    TXN_TRUST_DOMAIN_UNKNOWN = "txn.trust_domain_unknown"
    TXN_ALG_NOT_ALLOWED = "txn.alg_not_allowed"
    TXN_KID_UNKNOWN = "txn.kid_unknown"
    TXN_SIGNATURE_INVALID = "txn.signature_invalid"
    TXN_AUD_MISMATCH = "txn.aud_mismatch"
    TXN_EXP_MISSING = "txn.exp_missing"
    TXN_EXPIRED = "txn.expired"
    TXN_EXP_TOO_FAR = "txn.exp_too_far"
    TXN_IAT_IN_FUTURE = "txn.iat_in_future"
    TXN_NOT_YET_VALID = "txn.not_yet_valid"
    TXN_LIFETIME_EXCEEDED = "txn.lifetime_exceeded"
    TXN_CLAIM_MISSING = "txn.claim_missing"
    TXN_CLAIM_INVALID = "txn.claim_invalid"
    TXN_ACT_TOO_DEEP = "txn.act_too_deep"
    TXN_CHAIN_TOO_LONG = "txn.chain_too_long"

    # --- end-user token (RFC 9068 access token; OIDC ID token by configuration) ----------
    USER_MULTIPLE = "user.multiple"
    USER_UNBOUND = "user.unbound"
    USER_MALFORMED = "user.malformed"
    USER_HEADER_KEY_FORBIDDEN = "user.header_key_forbidden"
    USER_CRIT_UNSUPPORTED = "user.crit_unsupported"
    USER_B64_UNSUPPORTED = "user.b64_unsupported"
    USER_TYP_INVALID = "user.typ_invalid"
    USER_ISSUER_UNKNOWN = "user.issuer_unknown"
    USER_ALG_NOT_ALLOWED = "user.alg_not_allowed"
    USER_KID_UNKNOWN = "user.kid_unknown"
    USER_SIGNATURE_INVALID = "user.signature_invalid"
    USER_AUD_MISMATCH = "user.aud_mismatch"
    USER_EXP_MISSING = "user.exp_missing"
    USER_EXPIRED = "user.expired"
    USER_EXP_TOO_FAR = "user.exp_too_far"
    USER_IAT_IN_FUTURE = "user.iat_in_future"
    USER_NOT_YET_VALID = "user.not_yet_valid"
    USER_LIFETIME_EXCEEDED = "user.lifetime_exceeded"
    USER_CLAIM_MISSING = "user.claim_missing"
    USER_CLAIM_INVALID = "user.claim_invalid"

    # --- attestation results (EAR, draft-ietf-rats-ear, JWT form) -----------------------
    EAR_MULTIPLE = "ear.multiple"
    EAR_UNBOUND = "ear.unbound"
    EAR_MALFORMED = "ear.malformed"
    EAR_HEADER_KEY_FORBIDDEN = "ear.header_key_forbidden"
    EAR_CRIT_UNSUPPORTED = "ear.crit_unsupported"
    EAR_B64_UNSUPPORTED = "ear.b64_unsupported"
    EAR_ALG_NOT_ALLOWED = "ear.alg_not_allowed"
    EAR_VERIFIER_UNKNOWN = "ear.verifier_unknown"
    EAR_SIGNATURE_INVALID = "ear.signature_invalid"
    EAR_CLAIM_INVALID = "ear.claim_invalid"
    EAR_IAT_IN_FUTURE = "ear.iat_in_future"
    EAR_SUBJECT_MISMATCH = "ear.subject_mismatch"

    # --- HTTP Message Signatures (draft-ietf-wimse-http-signature) ----------------------
    HTTPSIG_UNSUPPORTED = "httpsig.unsupported"

    # --- mTLS identity reported by Envoy ------------------------------------------------
    MTLS_PRINCIPAL_INVALID = "mtls.principal_invalid"
    MTLS_TRUST_DOMAIN_UNKNOWN = "mtls.trust_domain_unknown"

    # --- policy -------------------------------------------------------------------------
    POLICY_ALLOWED = "policy.allowed"
    POLICY_DENIED = "policy.denied"
    POLICY_UNAUTHENTICATED = "policy.unauthenticated"
    POLICY_ERROR = "policy.error"
    POLICY_INVALID_DECISION = "policy.invalid_decision"
    POLICY_DRY_RUN_DENIED = "policy.dry_run_denied"
    POLICY_BACKEND_UNAVAILABLE = "policy.backend_unavailable"

    # --- emergency deny-list (checked after credentials, before policy) ------------------
    DENYLIST_WORKLOAD = "denylist.workload"
    DENYLIST_KID = "denylist.kid"
    DENYLIST_JTI = "denylist.jti"

    # --- our own availability -----------------------------------------------------------
    GATEWAY_NOT_READY = "gateway.not_ready"
    REPLAY_CAPACITY = "replay.capacity"
    SERVICE_UNKNOWN = "service.unknown"
    ROUTE_CONFIG_INVALID = "route.config_invalid"
    INTERNAL_ERROR = "internal.error"

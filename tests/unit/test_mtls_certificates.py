"""mTLS callers proven by the client certificate Envoy forwards (`include_peer_certificate`),
verified against the trust domain's SPIFFE bundle: real CheckRequests through the pipeline."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from authz.answers import Verdict
from authz.devtools.certs import CertificateAuthority, IssuedCertificate
from authz.devtools.spiffe import spiffe_bundle
from authz.devtools.stack import TRUST_DOMAIN, Identities
from authz.errors import ConfigError
from tests.support import GatewayHarness, check_request, expect_allowed, expect_denied

OPS = f"spiffe://{TRUST_DOMAIN}/ops"
FRONTEND = f"spiffe://{TRUST_DOMAIN}/frontend"
ROOT = CertificateAuthority.create("demo root", trust_domain_uri=f"spiffe://{TRUST_DOMAIN}")
OTHER = CertificateAuthority.create("another root", trust_domain_uri=f"spiffe://{TRUST_DOMAIN}")


@pytest.fixture
def gateway(harness: GatewayHarness, identities: Identities, tmp_path: Path) -> GatewayHarness:
    """The demo gateway with its trust domain given as a SPIFFE bundle file (the demo WIT
    issuer's key as `wit-svid`, ROOT as `x509-svid`) and peer certificates verified."""
    bundle = tmp_path / "demo.example.bundle.json"
    bundle.write_text(
        json.dumps(spiffe_bundle(wit_keys=[identities.issuer], authorities=[ROOT.certificate]))
    )
    domain = harness.config().trust_domains[TRUST_DOMAIN].model_dump(exclude_none=True)
    del domain["jwks_file"]
    domain["spiffe_bundle_file"] = str(bundle)
    checked = harness.rebuild(
        trust_domains={TRUST_DOMAIN: domain},
        mtls={"authenticate": True, "verify_peer_certificate": True},
    )
    checked.clock.now = time.time()  # the certificates are valid around now
    return checked


def svid(
    uri: str = OPS,
    ca: CertificateAuthority = ROOT,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> IssuedCertificate:
    return ca.issue(
        "workload",
        uris=[uri],
        server=False,
        client=True,
        not_before=not_before,
        not_after=not_after,
    )


def with_certificate(request: CheckRequest, certificate: IssuedCertificate | None) -> CheckRequest:
    if certificate is not None:
        request.attributes.source.certificate = quote(certificate.cert_pem.decode(), safe="")
    return request


def check(
    gateway: GatewayHarness, certificate: IssuedCertificate | None, principal: str = OPS
) -> Verdict:
    return gateway.check(with_certificate(check_request(principal=principal), certificate))


def caller_headers(verdict: Verdict) -> dict[str, str]:
    return dict(expect_allowed(verdict).headers)


def test_a_verified_svid_is_the_caller(gateway: GatewayHarness) -> None:
    headers = caller_headers(check(gateway, svid()))
    assert headers["x-wimse-caller"] == OPS
    assert headers["x-wimse-authenticated-by"] == "mtls"


def test_the_certificate_alone_names_the_caller_when_envoy_reports_no_principal(
    gateway: GatewayHarness,
) -> None:
    assert caller_headers(check(gateway, svid(), principal=""))["x-wimse-caller"] == OPS


def test_a_principal_that_disagrees_with_the_certificate_is_refused(
    gateway: GatewayHarness,
) -> None:
    expect_denied(check(gateway, svid(OPS), principal=FRONTEND), "mtls.certificate_mismatch", 401)


def test_a_certificate_from_another_ca_is_refused(gateway: GatewayHarness) -> None:
    expect_denied(check(gateway, svid(ca=OTHER)), "mtls.certificate_invalid", 401)


def test_an_expired_certificate_is_refused(gateway: GatewayHarness) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = svid(
        not_before=now - datetime.timedelta(hours=2), not_after=now - datetime.timedelta(hours=1)
    )
    expect_denied(check(gateway, expired), "mtls.certificate_invalid", 401)


def test_a_principal_without_its_certificate_is_refused(gateway: GatewayHarness) -> None:
    expect_denied(check(gateway, None), "mtls.certificate_missing", 401)


def test_no_principal_and_no_certificate_is_an_unauthenticated_request(
    gateway: GatewayHarness,
) -> None:
    expect_denied(check(gateway, None, principal=""), "policy.unauthenticated", 401)


def test_wits_still_verify_with_the_bundles_wit_svid_key(gateway: GatewayHarness) -> None:
    verdict = gateway.check(check_request(headers=gateway.signed_headers(), principal=""))
    assert caller_headers(verdict)["x-wimse-authenticated-by"] == "wpt"


def test_without_verification_the_principal_is_taken_as_given(harness: GatewayHarness) -> None:
    trusting = harness.rebuild(mtls={"authenticate": True})
    headers = caller_headers(trusting.check(check_request(principal=OPS)))
    assert headers["x-wimse-caller"] == OPS


def test_verification_needs_a_spiffe_bundle_for_every_mtls_trust_domain(
    harness: GatewayHarness,
) -> None:
    with pytest.raises(ConfigError, match="needs a spiffe_bundle_url or spiffe_bundle_file"):
        harness.rebuild(mtls={"authenticate": True, "verify_peer_certificate": True}).config()

"""deploy/spire: the gateway configuration for a SPIRE trust domain is valid and says what
its README says."""

from __future__ import annotations

from pathlib import Path

import yaml

from authz.config import parse_config

SPIRE = Path(__file__).resolve().parents[2] / "deploy" / "spire"
WIT_SVID_ALGORITHMS = {
    f"{family}{bits}" for family in ("RS", "ES", "PS") for bits in (256, 384, 512)
}
"""The SPIFFE WIT-SVID profile's algorithms: no EdDSA."""


def test_the_spire_configuration_is_valid_and_takes_its_anchors_from_the_bundle_endpoint() -> None:
    path = SPIRE / "gateway.yaml"
    config = parse_config(yaml.safe_load(path.read_text()), str(path), path.parent)
    [(name, domain)] = config.trust_domains.items()
    assert domain.spiffe_bundle_url is not None
    assert domain.spiffe_bundle_url.startswith("https://")
    assert set(domain.algorithms) <= WIT_SVID_ALGORITHMS
    assert config.mtls.verify_peer_certificate
    assert config.replay.redis is not None
    assert all(service.id.startswith(f"spiffe://{name}/") for service in config.services.values())

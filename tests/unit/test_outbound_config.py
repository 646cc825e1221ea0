"""Outbound configuration: what is refused before anything serves, the development issuer,
and `config check-egress` on the shipped egress Envoy."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.cli import main
from authz.devtools.stack import ENVOY_TEMPLATE, REPO_ROOT
from authz.errors import ConfigError
from tests.independent import wimse_checker as checker
from tests.support import ORIGIN, GatewayHarness, check_request, expect_allowed, header
from tests.unit.test_outbound import FRONTEND, outbound_overrides

EGRESS_YAML = REPO_ROOT / "deploy" / "envoy" / "egress.yaml"


def parse(harness: GatewayHarness, overrides: dict[str, Any]) -> None:
    harness.rebuild(**overrides).config()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda o: o["server"]["listeners"][1].pop("workload"), "names the one workload"),
        (lambda o: o["server"]["listeners"][0].update(workload="frontend"), "workload is for"),
        (lambda o: o["server"]["listeners"][1].update(workload="ops"), "not under outbound"),
        (
            lambda o: o["outbound"]["workloads"].update(ops=o["outbound"]["workloads"]["frontend"]),
            "no outbound listener serves",
        ),
        (lambda o: o.pop("outbound"), "need an 'outbound' section"),
        (
            lambda o: o["outbound"]["workloads"]["frontend"].update(dev_issuer={"dev": True}),
            "exactly one of",
        ),
        (lambda o: o["outbound"]["workloads"]["frontend"].update(id="spiffe://Demo/x"), "id"),
        (lambda o: o["outbound"]["callees"]["orders"].update(origin="https://x/api"), "origin"),
        (
            lambda o: o["outbound"]["callees"]["orders"].update(bound_headers=["authorization"]),
            "credential header",
        ),
        (lambda o: o["outbound"].update(user_token_header="x-wimse-caller"), "sets itself"),
        (lambda o: o["outbound"].update(proof_lifetime_seconds=600), "proof_lifetime"),
    ],
)
def test_outbound_configuration_mistakes_are_refused_naming_the_key(
    harness: GatewayHarness, tmp_path: Path, change: Any, message: str
) -> None:
    overrides = outbound_overrides(tmp_path)
    change(overrides)
    with pytest.raises(ConfigError, match=message):
        parse(harness, overrides)


def dev_overrides(tmp_path: Path, address: str, **dev: Any) -> dict[str, Any]:
    overrides = outbound_overrides(tmp_path)
    overrides["server"]["listeners"][1]["address"] = address
    overrides["outbound"]["workloads"]["frontend"] = {
        "id": FRONTEND,
        "dev_issuer": {"dev": True, **dev},
    }
    return overrides


def test_a_dev_issuer_needs_dev_true_written_down(harness: GatewayHarness, tmp_path: Path) -> None:
    overrides = dev_overrides(tmp_path, f"unix:{tmp_path}/egress.sock")
    overrides["outbound"]["workloads"]["frontend"]["dev_issuer"] = {"dev": False}
    with pytest.raises(ConfigError, match="dev"):
        parse(harness, overrides)


def test_a_dev_issuer_is_served_only_on_unix_or_loopback(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    overrides = dev_overrides(tmp_path, "10.0.0.5:9300")
    overrides["server"]["listeners"][1]["tls"] = {
        "cert_file": "c.pem",
        "key_file": "k.pem",
        "client_ca_file": "ca.pem",
        "allowed_clients": ["spiffe://demo.example/egress"],
    }
    with pytest.raises(ConfigError, match="only on a unix socket or loopback"):
        parse(harness, overrides)


def test_a_dev_issuer_mints_wits_that_only_its_published_key_verifies(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    jwks_file = tmp_path / "dev-issuer.jwks.json"
    egress = harness.rebuild(
        **dev_overrides(tmp_path, f"unix:{tmp_path}/egress.sock", jwks_file=str(jwks_file))
    )
    request = check_request("/api/orders/7", {}, service="orders")
    verdict = asyncio.run(egress.gateway.outbound["frontend"].check(request.attributes))
    allowed = expect_allowed(verdict)
    wit = header(allowed, "workload-identity-token") or ""
    jwks = json.loads(jwks_file.read_text())
    claims = checker.check_wit(wit, jwks, now=egress.clock.now, expected_sub=FRONTEND)
    assert claims["exp"] - claims["iat"] == 3600
    checker.check_wpt(
        checker.wpt_from_authorization(header(allowed, "authorization") or ""),
        wit=wit,
        now=egress.clock.now,
        audience=ORIGIN + "/api/orders/7",
    )
    # No trust domain trusts it unless told to: the gateway's own inbound side refuses it.
    received = {
        "workload-identity-token": wit,
        "authorization": header(allowed, "authorization") or "",
    }
    inbound = egress.check_path("/api/orders/7", received)
    assert not isinstance(inbound, type(allowed))


def test_a_dev_issuer_mints_a_new_wit_before_the_old_one_expires(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    egress = harness.rebuild(**dev_overrides(tmp_path, f"unix:{tmp_path}/egress.sock"))
    request = check_request("/api/orders/7", {}, service="orders")
    pipeline = egress.gateway.outbound["frontend"]
    first = header(
        expect_allowed(asyncio.run(pipeline.check(request.attributes))), "workload-identity-token"
    )
    egress.clock.now += 3600 - 299
    second = header(
        expect_allowed(asyncio.run(pipeline.check(request.attributes))), "workload-identity-token"
    )
    assert first != second


def gateway_for_shipped_egress(harness: GatewayHarness, tmp_path: Path) -> Path:
    """A gateway configuration matching deploy/envoy/egress.yaml: its outbound socket and
    the callee echo at gateway.yaml's ingress (127.0.0.1:10000)."""
    envoy = yaml.safe_load(EGRESS_YAML.read_text())
    pipe = next(
        c for c in envoy["static_resources"]["clusters"] if c["name"] == "wimse_authz_egress"
    )["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]
    ingress = yaml.safe_load(ENVOY_TEMPLATE.read_text())["static_resources"]["listeners"][0]
    port = ingress["address"]["socket_address"]["port_value"]
    overrides = outbound_overrides(tmp_path)
    overrides["server"]["listeners"][1]["address"] = f"unix:{pipe['path']}"
    overrides["outbound"]["callees"] = {"echo": {"origin": f"http://127.0.0.1:{port}"}}
    document = harness.rebuild(**overrides).config().model_dump(mode="json", exclude_none=True)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_the_shipped_egress_envoy_passes_check_egress(
    harness: GatewayHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = gateway_for_shipped_egress(harness, tmp_path)
    assert main(["config", "check-egress", "--config", str(config), str(EGRESS_YAML)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_egress_names_a_route_that_could_send_a_proof_elsewhere(
    harness: GatewayHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = gateway_for_shipped_egress(harness, tmp_path)
    envoy = yaml.safe_load(EGRESS_YAML.read_text())
    route = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["route_config"]["virtual_hosts"][0]["routes"][-1]["route"]
    route.pop("cluster")
    route["cluster_header"] = "x-destination"
    broken = tmp_path / "egress.yaml"
    broken.write_text(yaml.safe_dump(envoy))
    assert main(["config", "check-egress", "--config", str(config), str(broken)]) == 1
    assert "cluster_header" in capsys.readouterr().out


def test_check_egress_refuses_an_envoy_that_never_asks_the_outbound_listener(
    harness: GatewayHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = gateway_for_shipped_egress(harness, tmp_path)
    assert main(["config", "check-egress", "--config", str(config), str(ENVOY_TEMPLATE)]) == 1
    assert "nothing can be checked" in capsys.readouterr().out

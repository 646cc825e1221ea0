"""The `server.listeners[].tls` section: what the configuration accepts, and the checks a
listener's certificate files must pass before the gateway starts."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from authz.cli import main
from authz.config import ListenerConfig, ListenerTlsConfig, ServerConfig, load_config, parse_config
from authz.devtools.certs import CertificateAuthority, write_pem
from authz.devtools.stack import Ports, gateway_config
from authz.errors import ConfigError
from authz.server.listeners import client_names, load_credentials
from authz.server.tls import MAX_PEM_BYTES, load_tls_material

WHERE = "server.listeners.0.tls"


def with_listeners(*listeners: dict[str, Any]) -> dict[str, Any]:
    return {
        "server": {"listeners": list(listeners)},
        "trust_domains": {"example.org": {"algorithms": ["ES256"], "jwks": {"keys": []}}},
        "services": {"o": {"id": "spiffe://example.org/o", "origins": ["https://o.example"]}},
        "policy": {"directory": "policies"},
    }


def listener_error(*listeners: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(with_listeners(*listeners), "gateway.yaml", Path("/etc/wimse"))
    return str(caught.value)


TLS = {"cert_file": "tls/gateway.pem", "key_file": "tls/gateway-key.pem"}
MTLS = {**TLS, "client_ca_file": "tls/clients.pem"}


# --- the configuration ------------------------------------------------------------------


def test_tls_files_resolve_against_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "gateway.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(with_listeners({"address": "0.0.0.0:9191", "tls": MTLS})))
    tls = load_config(path).server.listeners[0].tls
    assert tls is not None
    assert tls.cert_file == tmp_path / "conf" / "tls" / "gateway.pem"
    assert tls.key_file == tmp_path / "conf" / "tls" / "gateway-key.pem"
    assert tls.client_ca_file == tmp_path / "conf" / "tls" / "clients.pem"


def test_tls_on_a_unix_socket_is_refused() -> None:
    text = listener_error({"address": "unix:/run/authz.sock", "tls": TLS})
    assert "server.listeners.0: " in text
    assert "tls is for TCP listeners" in text


@pytest.mark.parametrize("address", ["0.0.0.0:9191", "[::]:9191", "10.1.2.3:9191", "gw:9191"])
def test_plaintext_beyond_loopback_is_refused_unless_allowed(address: str) -> None:
    assert "add tls, or set allow_plaintext" in listener_error({"address": address})
    allowed = parse_config(
        with_listeners({"address": address, "allow_plaintext": True}), "g", Path("/")
    )
    assert allowed.server.listeners[0].plaintext_beyond_loopback


@pytest.mark.parametrize(
    "address", ["127.0.0.1:9191", "127.8.0.1:9191", "[::1]:9191", "localhost:9191", "unix:/s"]
)
def test_plaintext_on_loopback_and_unix_sockets_is_the_default(address: str) -> None:
    config = parse_config(with_listeners({"address": address}), "g", Path("/"))
    assert not config.server.listeners[0].plaintext_beyond_loopback


def test_allow_plaintext_contradicts_tls() -> None:
    text = listener_error({"address": "0.0.0.0:9191", "tls": TLS, "allow_plaintext": True})
    assert "allow_plaintext contradicts tls" in text


def test_allowed_clients_need_mutual_tls() -> None:
    tls = {**TLS, "allowed_clients": ["spiffe://example.org/envoy"]}
    assert "needs client_ca_file" in listener_error({"address": "0.0.0.0:1", "tls": tls})


@pytest.mark.parametrize("client", ["Envoy.Example", "*.example.org", "spiffe:/x", ""])
def test_allowed_clients_are_uris_or_lower_case_dns_names(client: str) -> None:
    tls = {**MTLS, "allowed_clients": [client]}
    text = listener_error({"address": "0.0.0.0:1", "tls": tls})
    assert "server.listeners.0.tls.allowed_clients" in text
    assert "neither a URI" in text


def test_mutual_tls_listeners_must_agree_on_allowed_clients() -> None:
    first = {**MTLS, "allowed_clients": ["spiffe://example.org/envoy"]}
    second = {**MTLS, "allowed_clients": ["envoy.example.org"]}
    text = listener_error(
        {"address": "0.0.0.0:1", "tls": first}, {"address": "0.0.0.0:2", "tls": second}
    )
    assert "must list the same allowed_clients" in text
    agreed = parse_config(
        with_listeners(
            {"address": "0.0.0.0:1", "tls": first},
            {
                "address": "0.0.0.0:2",
                "tls": {**first, "allowed_clients": ["spiffe://example.org/envoy"]},
            },
            {"address": "0.0.0.0:3", "tls": TLS},
        ),
        "g",
        Path("/"),
    )
    assert agreed.server.allowed_clients == {"spiffe://example.org/envoy"}


# --- the files, checked at start --------------------------------------------------------


@dataclass
class Files:
    directory: Path
    ca: CertificateAuthority

    def tls(self, **changes: Any) -> ListenerTlsConfig:
        fields: dict[str, Any] = {
            "cert_file": self.directory / "gateway.pem",
            "key_file": self.directory / "gateway-key.pem",
            "client_ca_file": self.directory / "clients.pem",
        }
        fields.update(changes)
        return ListenerTlsConfig.model_validate(fields)


@pytest.fixture
def files(tmp_path: Path) -> Files:
    ca = CertificateAuthority.create("gateway ca")
    issued = ca.intermediate("gateway issuing ca").issue("gw", dns_names=["gw.test"])
    write_pem(tmp_path / "gateway.pem", issued.chain_pem)
    write_pem(tmp_path / "gateway-key.pem", issued.key_pem)
    write_pem(tmp_path / "clients.pem", CertificateAuthority.create("clients").cert_pem)
    return Files(tmp_path, ca)


def refusal(tls: ListenerTlsConfig) -> str:
    with pytest.raises(ConfigError) as caught:
        load_tls_material(tls, WHERE)
    return str(caught.value)


def test_a_chain_with_its_key_and_client_cas_loads(files: Files) -> None:
    material = load_tls_material(files.tls(), WHERE)
    assert material.leaf.subject.rfc4514_string() == "CN=gw"
    assert material.cert_chain.count(b"BEGIN CERTIFICATE") == 2
    assert material.client_ca is not None


def test_missing_files_are_named(files: Files) -> None:
    text = refusal(files.tls(key_file=files.directory / "absent.pem"))
    assert f"{WHERE}.key_file" in text
    assert "cannot read" in text


def test_a_key_that_does_not_belong_to_the_certificate_is_refused(files: Files) -> None:
    other = files.ca.issue("other")
    write_pem(files.directory / "other-key.pem", other.key_pem)
    text = refusal(files.tls(key_file=files.directory / "other-key.pem"))
    assert "the key does not belong to the certificate" in text


def test_an_encrypted_key_is_refused(files: Files) -> None:
    issued = files.ca.issue("gw")
    encrypted = issued.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    write_pem(files.directory / "gateway.pem", issued.cert_pem)
    write_pem(files.directory / "gateway-key.pem", encrypted)
    assert "encrypted" in refusal(files.tls())


def test_an_expired_certificate_is_refused(files: Files) -> None:
    now = datetime.datetime.now(datetime.UTC)
    issued = files.ca.issue(
        "gw", not_before=now - datetime.timedelta(days=2), not_after=now - datetime.timedelta(1)
    )
    write_pem(files.directory / "gateway.pem", issued.cert_pem)
    write_pem(files.directory / "gateway-key.pem", issued.key_pem)
    assert "expired at" in refusal(files.tls())


def test_a_half_written_certificate_file_is_refused(files: Files) -> None:
    path = files.directory / "gateway.pem"
    whole = path.read_bytes()
    for cut in (len(whole) // 3, len(whole) - 40):
        path.write_bytes(whole[:cut])
        assert f"{WHERE}.cert_file" in refusal(files.tls())


def test_a_key_in_the_certificate_file_is_refused(files: Files) -> None:
    path = files.directory / "gateway.pem"
    path.write_bytes(path.read_bytes() + (files.directory / "gateway-key.pem").read_bytes())
    assert "something other than certificates" in refusal(files.tls())


def test_client_ca_file_must_hold_ca_certificates(files: Files) -> None:
    write_pem(files.directory / "clients.pem", files.ca.issue("not a ca").cert_pem)
    assert "is not a CA certificate" in refusal(files.tls())


def test_files_are_read_with_a_size_bound(files: Files) -> None:
    (files.directory / "clients.pem").write_bytes(b"A" * (MAX_PEM_BYTES + 1))
    text = refusal(files.tls())
    assert f"{WHERE}.client_ca_file" in text
    assert "larger than" in text


def test_every_listener_is_checked_and_named(files: Files) -> None:
    server = ServerConfig(
        listeners=[
            ListenerConfig(address="127.0.0.1:1"),
            ListenerConfig(address="0.0.0.0:2", tls=files.tls(key_file=files.directory / "x")),
        ]
    )
    with pytest.raises(ConfigError, match=r"server\.listeners\.1\.tls\.key_file"):
        load_credentials(server)


def test_config_check_exits_2_on_a_bad_key(
    files: Files, identity_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_pem(files.directory / "gateway-key.pem", files.ca.issue("x").key_pem)
    tls = {"cert_file": "gateway.pem", "key_file": "gateway-key.pem"}
    document = gateway_config(
        identity_dir,
        Ports(1, 2, 3, 4),
        overrides={"server": {"listeners": [{"address": "127.0.0.1:9191", "tls": tls}]}},
    )
    path = files.directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    assert main(["config", "check", "--config", str(path)]) == 2
    assert "does not belong to the certificate" in capsys.readouterr().err


# --- client identities ------------------------------------------------------------------


def test_client_names_are_the_certificates_uri_and_dns_sans() -> None:
    context = {
        "transport_security_type": [b"ssl"],
        "x509_pem_cert": [b"..."],
        "peer_uri": [b"spiffe://example.org/envoy"],
        "peer_dns": [b"Envoy.Example.org"],
    }
    expected = frozenset({"spiffe://example.org/envoy", "envoy.example.org"})
    assert client_names(context) == expected
    assert client_names({"transport_security_type": [b"insecure"]}) is None
    assert client_names({"transport_security_type": [b"ssl"]}) is None, "no client certificate"

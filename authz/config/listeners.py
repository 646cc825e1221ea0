"""The gateway's own listeners: addresses, TLS, client allow-lists, workers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from authz.config.base import (
    DNS_NAME,
    PositiveSeconds,
    Strict,
    check_host_port,
    is_loopback_host,
)


class ListenerTlsConfig(Strict):
    """TLS on a TCP listener. The files are read and checked at start, and read again when
    they change: new connections get the new certificate without a restart."""

    cert_file: Path
    """The gateway's certificate (PEM), followed by any intermediates a client needs."""
    key_file: Path
    """The certificate's private key (PEM, unencrypted)."""
    client_ca_file: Path | None = None
    """Set: mutual TLS. Every client must present a certificate issued under these CAs."""
    allowed_clients: list[str] = Field(default_factory=list)
    """URI SANs (SPIFFE IDs) or DNS SANs a client certificate must carry one of; empty:
    any certificate from `client_ca_file`. Needs `client_ca_file`."""

    @field_validator("allowed_clients")
    @classmethod
    def _check_clients(cls, values: list[str]) -> list[str]:
        for value in values:
            scheme, sep, rest = value.partition("://")
            if sep and scheme and rest:
                continue
            if DNS_NAME.fullmatch(value) is None:
                raise ValueError(f"{value!r} is neither a URI (spiffe://...) nor a DNS name")
        return values

    @model_validator(mode="after")
    def _clients_need_a_ca(self) -> ListenerTlsConfig:
        if self.allowed_clients and self.client_ca_file is None:
            raise ValueError("allowed_clients needs client_ca_file (mutual TLS)")
        return self


class ListenerConfig(Strict):
    address: str
    """`host:port` for TCP (e.g. `127.0.0.1:9191`, `[::1]:9191`) or `unix:/path/to.sock`."""
    tls: ListenerTlsConfig | None = None
    """TLS, or mutual TLS, on a TCP listener. Unix sockets are protected by file
    permissions instead, and refuse it."""
    allow_plaintext: bool = False
    """Plaintext TCP on an address other than loopback is refused unless this is set:
    anyone who can reach it could ask for decisions and spend WPTs."""
    mode: Literal["inbound", "outbound", "edge", "tts"] = "inbound"
    """What this listener does, decided here and never by a request: `inbound` verifies
    callers; `outbound` attaches `workload`'s credentials to the requests it sends
    (`docs/outbound.md`); `edge` turns an external credential into a Txn-Token; `tts` is
    the token-exchange HTTP endpoint, not ext_authz (`docs/tts.md`)."""
    workload: str | None = None
    """Outbound listeners: the one workload (a key of `outbound.workloads`) they speak for."""

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        if value.startswith("unix:"):
            if not value[len("unix:") :]:
                raise ValueError("unix socket path is empty")
            return value
        try:
            return check_host_port(value)
        except ValueError:
            raise ValueError("expected host:port or unix:/path") from None

    @model_validator(mode="after")
    def _check_mode(self) -> ListenerConfig:
        if (self.workload is not None) != (self.mode == "outbound"):
            raise ValueError(
                "an outbound listener names the one workload it speaks for"
                if self.mode == "outbound"
                else "workload is for mode: outbound listeners"
            )
        if self.mode == "tts":
            if not self.is_unix and self.tls is None:
                raise ValueError("a tts listener is a unix socket or TLS")
            return self
        # Whoever reaches an outbound or edge listener gets credentials minted: only its
        # own Envoy may, through a socket in a directory shared with it alone or through
        # mutual TLS naming it.
        if self.mode in ("outbound", "edge") and not self.is_unix and not self.names_clients:
            raise ValueError(
                f"an {self.mode} listener is a unix socket, or mutual TLS with allowed_clients "
                "naming its Envoy"
            )
        return self

    @property
    def names_clients(self) -> bool:
        """Mutual TLS with an `allowed_clients` list."""
        return (
            self.tls is not None
            and self.tls.client_ca_file is not None
            and bool(self.tls.allowed_clients)
        )

    @model_validator(mode="after")
    def _check_security(self) -> ListenerConfig:
        if self.is_unix:
            if self.tls is not None:
                raise ValueError("tls is for TCP listeners; protect a unix socket's directory")
            return self
        if self.tls is not None:
            if self.allow_plaintext:
                raise ValueError("allow_plaintext contradicts tls: drop one")
            return self
        if self.plaintext_beyond_loopback and not self.allow_plaintext:
            raise ValueError(
                "plaintext on a non-loopback address: add tls, or set allow_plaintext: true"
            )
        return self

    @property
    def is_unix(self) -> bool:
        return self.address.startswith("unix:")

    @property
    def plaintext_beyond_loopback(self) -> bool:
        """Plaintext TCP that other hosts may reach (only with `allow_plaintext`)."""
        if self.is_unix or self.tls is not None:
            return False
        return not is_loopback_host(self.address.rpartition(":")[0])


MAX_WORKERS = 128


def worker_address(address: str, index: int) -> str:
    """Where worker `index` of `serve --workers N` listens for a configured `address`:
    TCP `host:port` → `host:<port + index>`; `unix:/dir/name.sock` →
    `unix:/dir/name-<index>.sock` (the index goes before the last suffix; a name without
    one gets `-<index>` appended)."""
    if address.startswith("unix:"):
        path = address.removeprefix("unix:").removeprefix("//")
        directory, slash, name = path.rpartition("/")
        stem, dot, suffix = name.rpartition(".")
        if not dot or not stem:
            stem, suffix = name, ""
        return f"unix:{directory}{slash}{stem}-{index}{'.' if suffix else ''}{suffix}"
    host, _, port = address.rpartition(":")
    return f"{host}:{int(port) + index}"


class ServerConfig(Strict):
    listeners: list[ListenerConfig] = Field(min_length=1)
    reflection: bool = True
    shutdown_grace_seconds: PositiveSeconds = 10.0
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The loop the server runs on: uvloop (less CPU per Check) or the standard library's."""
    workers: Annotated[int, Field(ge=1, le=MAX_WORKERS)] = 1
    """Gateway processes on this machine (`serve --workers` overrides it). Above 1, each
    worker listens on its own endpoint per listener (`worker_address`)."""

    @model_validator(mode="after")
    def _worker_ports_fit(self) -> ServerConfig:
        for listener in self.listeners:
            if (
                not listener.is_unix
                and int(listener.address.rpartition(":")[2]) + (self.workers - 1) > 65535
            ):
                raise ValueError(
                    f"{listener.address}: {self.workers} workers need ports up to "
                    f"{listener.address.rpartition(':')[2]}+{self.workers - 1}, beyond 65535"
                )
        return self

    def for_worker(self, index: int) -> ServerConfig:
        """These listeners as worker `index` binds them (`worker_address`)."""
        listeners = [
            listener.model_copy(update={"address": worker_address(listener.address, index)})
            for listener in self.listeners
        ]
        return self.model_copy(update={"listeners": listeners})

    @model_validator(mode="after")
    def _one_client_allow_list(self) -> ServerConfig:
        # gRPC does not tell a call which listener it arrived on, so one list is enforced on
        # every mutual-TLS connection of a server: the inbound listeners share one server and
        # may not disagree. Each outbound listener has a server, and a list, of its own.
        lists = {
            frozenset(listener.tls.allowed_clients)
            for listener in self.inbound_listeners
            if listener.tls is not None and listener.tls.client_ca_file is not None
        }
        if len(lists) > 1:
            raise ValueError("every mutual-TLS inbound listener must list the same allowed_clients")
        return self

    @property
    def inbound_listeners(self) -> list[ListenerConfig]:
        return [listener for listener in self.listeners if listener.mode == "inbound"]

    @property
    def grpc_listeners(self) -> list[ListenerConfig]:
        """Every ext_authz listener (all but the `tts` HTTP endpoint's)."""
        return [listener for listener in self.listeners if listener.mode != "tts"]

    @property
    def allowed_clients(self) -> frozenset[str]:
        """The client certificate SANs allowed on mutual-TLS inbound listeners; empty: any."""
        for listener in self.inbound_listeners:
            if listener.tls is not None and listener.tls.client_ca_file is not None:
                return frozenset(listener.tls.allowed_clients)
        return frozenset()

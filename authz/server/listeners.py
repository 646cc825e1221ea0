"""The gRPC listeners: plaintext TCP, Unix sockets, TLS and mutual TLS, on one server.

`bind_listeners` reads and checks every listener's certificate files before anything
binds (a bad file is a configuration error, never a half-started gateway), then binds each
address. TLS listeners take new certificates and client CAs from their files without a
restart (see `authz.server.tls`); changing a listener itself (address, files named, TLS on
or off) needs a restart.

`client_interceptors` enforces `allowed_clients`: a call on a mutual-TLS connection whose
client certificate carries none of the allowed URI or DNS SANs is refused with
PERMISSION_DENIED. gRPC does not say which listener a call came in on, so the list is one
for the server (the configuration makes every mutual-TLS listener agree on it).
"""

from __future__ import annotations

import inspect
import logging
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc

from authz.config import ListenerConfig, ServerConfig
from authz.errors import ConfigError
from authz.server.endpoints import refuse_live_socket, unix_socket_path
from authz.server.tls import ReloadingCredentials

log = logging.getLogger("authz.server")

SERVER_OPTIONS = [
    # gRPC turns SO_REUSEPORT on by default; a second gateway on the same port must fail
    # to start rather than silently share (and split) Envoy's traffic.
    ("grpc.so_reuseport", 0),
]


@dataclass(frozen=True, slots=True)
class BoundListener:
    """A listener as bound: its address with the port actually taken, and its security."""

    address: str
    security: Literal["plaintext", "tls", "mtls"]
    credentials: ReloadingCredentials | None = None
    """For TLS listeners: the certificate material serving now, and its reload counts."""

    def __str__(self) -> str:
        return f"{self.address} ({self.security})"


def load_credentials(config: ServerConfig) -> list[ReloadingCredentials | None]:
    """Each listener's certificate material, read and checked; `ConfigError` naming the
    listener and file when one is unusable. `config check` runs this too."""
    return [
        ReloadingCredentials(listener.tls, f"server.listeners.{index}.tls")
        if listener.tls is not None
        else None
        for index, listener in enumerate(config.listeners)
    ]


def bind_listeners(
    server: grpc.aio.Server,
    listeners: Sequence[ListenerConfig],
    credentials: Sequence[ReloadingCredentials | None],
) -> list[BoundListener]:
    """Add `listeners` to `server` (not yet started), each with its `credentials` (from
    `load_credentials`, read before anything binds). `ConfigError` for an outbound socket
    in a directory open to others, `OSError` when an address cannot be listened on."""
    for listener in listeners:
        if listener.mode in ("outbound", "edge") and listener.is_unix:
            check_outbound_socket_directory(unix_socket_path(listener))
    bound = []
    for listener, tls in zip(listeners, credentials, strict=True):
        address = _grpc_address(listener)
        if listener.plaintext_beyond_loopback:
            log.warning(
                "%s: plaintext on a network address (allow_plaintext): anyone who can reach "
                "it can ask for decisions; prefer mutual TLS",
                listener.address,
            )
        try:
            if tls is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, tls.credentials())
        except RuntimeError:  # grpc reports a failed bind this way
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {listener.address} (in use, or no permission)")
        if not listener.is_unix:
            address = f"{address.rpartition(':')[0]}:{port}"
        if tls is None:
            bound.append(BoundListener(address, "plaintext"))
        else:
            bound.append(BoundListener(address, "mtls" if tls.mutual else "tls", tls))
    return bound


def check_outbound_socket_directory(path: Path) -> None:
    """Whoever can connect to an outbound (or edge) socket gets credentials minted: its
    directory must grant nothing to others (it is shared with the workload's egress Envoy
    alone, by owner or group). A missing directory is created so (mode 0750) in an existing
    parent. `ConfigError` otherwise."""
    directory = path.parent
    try:
        directory.mkdir(mode=0o750, exist_ok=True)
        mode = directory.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"outbound socket directory {directory}: {exc.strerror}") from None
    if mode & stat.S_IRWXO:
        raise ConfigError(
            f"outbound socket directory {directory} is open to others "
            f"(mode {stat.S_IMODE(mode):o}): share it with the egress Envoy alone, "
            "e.g. chmod 750 and a group for both"
        )


def restrict_outbound_sockets(listeners: Sequence[ListenerConfig]) -> None:
    """Narrow bound outbound and edge Unix sockets to owner and group (gRPC creates them under the
    process umask)."""
    for listener in listeners:
        if listener.mode in ("outbound", "edge") and listener.is_unix:
            os.chmod(unix_socket_path(listener), 0o660)


def _grpc_address(listener: ListenerConfig) -> str:
    if listener.is_unix:
        path = unix_socket_path(listener)
        refuse_live_socket(path)
        return f"unix:{path}"
    return listener.address


# --- allowed clients ------------------------------------------------------------------------


def client_interceptors(config: ServerConfig) -> list[grpc.aio.ServerInterceptor]:
    """What the server must be created with to enforce `allowed_clients`; none without it."""
    allowed = config.allowed_clients
    return [ClientAllowList(allowed)] if allowed else []


def client_names(auth_context: dict[str, list[bytes]]) -> frozenset[str] | None:
    """The URI and DNS SANs of the peer's certificate; None when the connection carries no
    client certificate (plaintext, or TLS without client authentication)."""
    if auth_context.get("transport_security_type") != [b"ssl"]:
        return None
    if "x509_pem_cert" not in auth_context:
        return None
    uris = {value.decode("utf-8", "replace") for value in auth_context.get("peer_uri", ())}
    dns = {value.decode("ascii", "replace").lower() for value in auth_context.get("peer_dns", ())}
    return frozenset(uris | dns)


class ClientAllowList(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every method, health and reflection included, to a client certificate
    without an allowed SAN. Plaintext and server-only TLS connections are not checked:
    they present no client certificate, and the listener they arrive on was configured
    without client authentication."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self._allowed = frozenset(name if "://" in name else name.lower() for name in allowed)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        return _guarded(handler, self._enforce)

    async def _enforce(self, context: grpc.aio.ServicerContext) -> None:
        names = client_names(context.auth_context())
        if names is None or names & self._allowed:
            return
        log.warning(
            "refused a call from a client certificate not in allowed_clients: %s",
            ", ".join(sorted(names)) or "(no URI or DNS SAN)",
        )
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "client not allowed")


Enforce = Callable[[Any], Awaitable[None]]


def _guard(behavior: Callable[..., Any], enforce: Enforce) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
            await enforce(context)
            async for response in behavior(request, context):
                yield response

        return streaming

    async def call(request: Any, context: Any) -> Any:
        await enforce(context)
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return call


def _guarded(handler: grpc.RpcMethodHandler, enforce: Enforce) -> grpc.RpcMethodHandler:
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _guard(handler.unary_unary, enforce), **serializers
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _guard(handler.unary_stream, enforce), **serializers
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _guard(handler.stream_unary, enforce), **serializers
        )
    return grpc.stream_stream_rpc_method_handler(
        _guard(handler.stream_stream, enforce), **serializers
    )

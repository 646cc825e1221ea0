"""Whether a listener's address is free, without binding it: a socket file another server
answers on, or a TCP port something listens on. gRPC would take over the first silently;
`serve --workers N` looks for both before it starts a worker."""

from __future__ import annotations

import errno
import socket
import stat
from pathlib import Path

from authz.config import ListenerConfig, ServerConfig


def unix_socket_path(listener: ListenerConfig) -> Path:
    """The file a `unix:` listener binds."""
    return Path(listener.address.removeprefix("unix:").removeprefix("//"))


def refuse_listeners_in_use(config: ServerConfig) -> None:
    """`OSError` naming the first listener address something already listens on; binds
    nothing. (Binding refuses these too; this finds them before a process is started.)"""
    for listener in config.listeners:
        if listener.is_unix:
            refuse_live_socket(unix_socket_path(listener))
        else:
            refuse_listening_port(listener.address)


def refuse_listening_port(address: str) -> None:
    """`OSError` if something listens on the TCP `host:port`."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        candidates = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return  # binding will say what is wrong with the name
    for family, kind, protocol, _, socket_address in candidates:
        with socket.socket(family, kind, protocol) as probe:
            # As gRPC binds: a port whose only sockets linger after closing is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(socket_address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(f"cannot listen on {address}: in use") from None


def refuse_live_socket(path: Path) -> None:
    """gRPC unlinks whatever socket file is at the path before binding, which would silently
    take over a running gateway's socket: `OSError` if something answers there."""
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            return
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return  # stale: nothing listens, gRPC may replace it
    raise OSError(f"cannot listen on unix:{path}: another server is answering there")

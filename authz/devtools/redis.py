"""A throwaway redis-server for the tests and the load-and-fault runs: loopback only, no
persistence, its own directory, stopped and started again on the same port on demand.

Needs the `redis-server` binary (Debian: `apt-get install redis-server`); no system service
is used.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from authz.config import RedisReplayConfig
from authz.devtools.stack import ManagedProcess, free_port
from authz.replay.redis_loss import sentinel_key, sentinel_value


@dataclass(frozen=True, slots=True)
class RedisTls:
    """TLS for a test server: it then listens with TLS only."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    """Verifies client certificates, and the server for `RedisServer.client()`."""
    client_cert_file: Path | None = None
    """Set (with `client_key_file`): the server requires client certificates, and
    `RedisServer.client()` presents this one."""
    client_key_file: Path | None = None


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server not found: install it (apt-get install redis-server)")
    return path


@dataclass
class RedisServer:
    """One redis-server on 127.0.0.1:`port`. Its settings are written to a file in
    `directory` (not the command line, so a password stays out of the process list); its
    output goes to `directory/redis.log`. Use it as a context manager, or call `stop`."""

    directory: Path
    password: str | None = None
    tls: RedisTls | None = None
    port: int = field(default_factory=free_port)
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start (again, on the same port) and return once it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        settings = ["bind 127.0.0.1"]
        if self.tls is None:
            settings.append(f"port {self.port}")
        else:
            settings += [
                "port 0",
                f"tls-port {self.port}",
                f'tls-cert-file "{self.tls.cert_file}"',
                f'tls-key-file "{self.tls.key_file}"',
                f'tls-ca-cert-file "{self.tls.ca_file}"',
                f"tls-auth-clients {'no' if self.tls.client_cert_file is None else 'yes'}",
            ]
        settings += [
            f'dir "{self.directory}"',
            'save ""',
            "appendonly no",
            "daemonize no",
            'logfile ""',
        ]
        if self.password is not None:
            settings.append(f'requirepass "{self.password}"')
        conf = self.directory / "redis.conf"
        conf.write_text("\n".join(settings) + "\n", encoding="utf-8")
        conf.chmod(0o600)
        self.process = ManagedProcess(
            "redis", [redis_server_binary(), str(conf)], self.directory / "redis.log"
        ).start()
        try:
            self._wait_until_answering(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (its data is gone: nothing is persisted)."""
        if self.process is not None:
            self.process.stop()
            self.process = None

    def put_in_service(self, key_prefix: str | None = None, *, since: float = 86400.0) -> None:
        """Make the store look like one gateways have used for `since` seconds (under
        `key_prefix`, default the configuration's): its sentinel records a loss that long
        ago. A new Redis has none, so the first claim on it records a loss then and refuses
        proofs that could have been used before it (`authz.replay.redis_loss`); tests and
        runs about something else start from a store in service instead."""
        prefix = key_prefix or str(RedisReplayConfig.model_fields["key_prefix"].default)
        with self.client() as client:
            run_id = str(client.info("server")["run_id"])
            client.set(sentinel_key(prefix), sentinel_value(time.time() - since, run_id))

    def client(self) -> redis.Redis:
        """A synchronous client, for looking at keys from a test or a script."""
        tls: dict[str, Any] = {}
        if self.tls is not None:
            tls = {
                "ssl": True,
                "ssl_ca_certs": str(self.tls.ca_file),
                "ssl_certfile": _optional_str(self.tls.client_cert_file),
                "ssl_keyfile": _optional_str(self.tls.client_key_file),
            }
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=5,
            socket_connect_timeout=5,
            **tls,
        )

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines) if self.process is not None else ""

    def _wait_until_answering(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        with self.client() as client:
            while time.monotonic() < deadline:
                if self.process is None or not self.process.running():
                    raise RuntimeError(f"redis-server exited:\n{self.log_tail()}")
                try:
                    if client.ping():
                        return
                except redis.RedisError as exc:
                    last = str(exc)
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not answer PING ({last})")

    def __enter__(self) -> RedisServer:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _optional_str(path: Path | None) -> str | None:
    return None if path is None else str(path)

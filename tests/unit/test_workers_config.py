"""Configuration for `serve --workers N`: each worker's endpoints, what cannot run with
several workers, and the settings a restarted worker takes from its supervisor."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from authz.config import Config, parse_config, worker_address
from authz.devtools.stack import Ports, gateway_config
from authz.errors import ConfigError
from authz.server.workers import WorkerRole, read_settings, write_settings
from tests.support import ORIGIN


def config(directory: Path, listeners: list[str] | None = None, **overrides: Any) -> Config:
    document = gateway_config(
        directory, Ports(443, 1, 9191, 3), listeners=listeners, origins=[ORIGIN]
    )
    for key, value in overrides.items():
        document[key] = {**document.get(key, {}), **value}
    return parse_config(document, "test", directory)


@pytest.mark.parametrize(
    ("address", "index", "expected"),
    [
        ("127.0.0.1:9191", 0, "127.0.0.1:9191"),
        ("127.0.0.1:9191", 3, "127.0.0.1:9194"),
        ("[::1]:9191", 1, "[::1]:9192"),
        ("0.0.0.0:9191", 1, "0.0.0.0:9192"),
        ("unix:/run/wimse-authz/authz.sock", 0, "unix:/run/wimse-authz/authz-0.sock"),
        ("unix:/run/wimse-authz/authz.sock", 2, "unix:/run/wimse-authz/authz-2.sock"),
        ("unix:/run/a.b/authz.v1.sock", 1, "unix:/run/a.b/authz.v1-1.sock"),
        ("unix:/run/authz", 1, "unix:/run/authz-1"),
        ("unix:/run/.authz", 1, "unix:/run/.authz-1"),
        ("unix:authz.sock", 1, "unix:authz-1.sock"),
        ("unix:///run/authz.sock", 1, "unix:/run/authz-1.sock"),
    ],
)
def test_each_worker_listens_on_an_address_derived_from_the_listener(
    address: str, index: int, expected: str
) -> None:
    assert worker_address(address, index) == expected


def test_workers_default_to_one(identity_dir: Path) -> None:
    assert config(identity_dir).server.workers == 1


def test_worker_listeners_keep_their_tls(identity_dir: Path) -> None:
    tls = {"cert_file": "gateway.pem", "key_file": "gateway-key.pem"}
    document = gateway_config(
        identity_dir, Ports(443, 1, 9191, 3), listeners=["127.0.0.1:9191"], origins=[ORIGIN]
    )
    document["server"]["listeners"].append({"address": "0.0.0.0:9443", "tls": tls})
    document["server"]["workers"] = 2
    server = parse_config(document, "test", identity_dir).server
    second = server.for_worker(1)
    assert [listener.address for listener in second.listeners] == [
        "127.0.0.1:9192",
        "0.0.0.0:9444",
    ]
    assert second.listeners[1].tls == server.listeners[1].tls


def test_workers_whose_ports_would_pass_65535_are_refused(identity_dir: Path) -> None:
    with pytest.raises(ConfigError, match="beyond 65535"):
        config(identity_dir, ["127.0.0.1:65535"], server={"workers": 2})
    assert config(identity_dir, ["127.0.0.1:65534"], server={"workers": 2}).server.workers == 2


def test_a_local_replay_fallback_is_refused_with_several_workers(identity_dir: Path) -> None:
    fallback = {"redis": {"url": "redis://127.0.0.1:6379", "on_unavailable": "local_fallback"}}
    with pytest.raises(ConfigError, match="local_fallback cannot be used"):
        config(identity_dir, server={"workers": 2}, replay=fallback)
    single = config(identity_dir, replay=fallback)
    with pytest.raises(ConfigError, match=r"--workers 2: .*local_fallback"):
        single.with_workers(2)
    closed = {"redis": {"url": "redis://127.0.0.1:6379", "on_unavailable": "fail_closed"}}
    assert config(identity_dir, replay=closed).with_workers(2).server.workers == 2


def test_the_workers_option_is_validated_like_the_key(identity_dir: Path) -> None:
    base = config(identity_dir, ["127.0.0.1:65535"])
    with pytest.raises(ConfigError, match="beyond 65535"):
        base.with_workers(2)
    with pytest.raises(ConfigError, match="--workers 0"):
        config(identity_dir).with_workers(0)
    assert config(identity_dir).with_workers(4).server.workers == 4


def test_a_restarted_worker_keeps_the_settings_the_server_started_with(
    identity_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    started = config(identity_dir, ["127.0.0.1:9191"]).with_workers(3)
    write_settings(tmp_path, started)
    assert (tmp_path / "settings.json").stat().st_mode & 0o777 == 0o600
    edited = config(identity_dir, ["127.0.0.1:7000"], diagnostics={"address": "127.0.0.1:1"})
    with caplog.at_level(logging.WARNING):
        applied = WorkerRole(1, tmp_path).apply(edited)
    assert [listener.address for listener in applied.server.listeners] == ["127.0.0.1:9191"]
    assert applied.diagnostics is None
    assert applied.server.workers == edited.server.workers, "the file's, not --workers'"
    assert {"server", "diagnostics"} <= {r.message.split()[0] for r in caplog.records}


def test_a_worker_started_with_the_same_file_warns_about_nothing(
    identity_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_settings(tmp_path, config(identity_dir).with_workers(2))
    with caplog.at_level(logging.WARNING):
        applied = WorkerRole(0, tmp_path).apply(config(identity_dir))
    assert applied == config(identity_dir)
    assert caplog.records == []


def test_unreadable_supervisor_settings_are_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="settings cannot be read"):
        read_settings(tmp_path)
    (tmp_path / "settings.json").write_text("{}")
    with pytest.raises(ConfigError, match="settings cannot be read"):
        read_settings(tmp_path)


def test_the_supervisor_loads_no_gateway_code() -> None:
    """It checks the configuration in a child process and never holds a policy engine,
    keys or their memory (its RSS is about that of the configuration's imports)."""
    probe = (
        "import sys, authz.server.supervisor, authz.cli\n"
        "loaded = {'authz.gateway', 'authz.pipeline', 'regorus', 'grpc'} & set(sys.modules)\n"
        "print(sorted(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"

"""A real redis-server per test (`authz.devtools.redis`): loopback, no persistence, stopped
at the end of the test whatever happens. A test module uses it with
`pytest_plugins = ("tests.redis_server",)`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.devtools.redis import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server; `stop()` and `start()` it again (same port) for faults."""
    with RedisServer(tmp_path / "redis") as server:
        yield server

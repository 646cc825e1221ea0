"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.devtools.stack import Identities, ensure_identities
from tests.support import GatewayHarness


@pytest.fixture(scope="session")
def identity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("identities")


@pytest.fixture(scope="session")
def identities(identity_dir: Path) -> Identities:
    """The demo trust domain's keys, generated once per test session."""
    return ensure_identities(identity_dir)


@pytest.fixture
def harness(identity_dir: Path, identities: Identities) -> GatewayHarness:
    """A fresh in-process gateway (sample policy, demo trust domain, fixed clock)."""
    return GatewayHarness(identity_dir, identities)

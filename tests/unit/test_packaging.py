"""pyproject.toml lists the wheel's packages by hand, since `packages.find` cannot add the
sample policies that package-dir maps in from policies/: a package added under authz/ must be
added to that list too, or the wheel leaves it out. tests/e2e/test_wheel.py builds the wheel."""

from __future__ import annotations

import tomllib
from typing import Any

from authz.devtools.stack import REPO_ROOT
from authz.policy.samples import SAMPLES_PACKAGE


def setuptools_config() -> dict[str, Any]:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    config: dict[str, Any] = pyproject["tool"]["setuptools"]
    return config


def test_every_package_under_authz_is_in_the_wheels_package_list() -> None:
    on_disk = {
        ".".join(module.parent.relative_to(REPO_ROOT).parts)
        for module in (REPO_ROOT / "authz").rglob("*.py")
    }
    listed = set(setuptools_config()["packages"])
    assert sorted(listed - {SAMPLES_PACKAGE}) == sorted(on_disk)


def test_the_sample_policies_package_is_the_policies_directory() -> None:
    config = setuptools_config()
    assert SAMPLES_PACKAGE in config["packages"]
    assert config["package-dir"] == {SAMPLES_PACKAGE: "policies"}

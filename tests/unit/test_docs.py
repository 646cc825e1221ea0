"""The documentation stays in step with the code it describes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from authz.config import parse_config
from authz.reasons import Reason

REPO = Path(__file__).resolve().parents[2]


def test_every_reason_code_is_documented_and_no_other() -> None:
    text = (REPO / "docs" / "reasons.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_]+\.[a-z0-9_]+)` \|", text, re.M))
    assert documented == {reason.value for reason in Reason}


def test_the_example_configuration_is_valid() -> None:
    path = REPO / "deploy" / "gateway" / "gateway.example.yaml"
    config = parse_config(yaml.safe_load(path.read_text()), str(path), path.parent)
    assert config.default_service == "orders"


def test_readme_setup_is_the_two_make_targets() -> None:
    readme = (REPO / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in setup.strip().splitlines()]
    assert commands == ["make run", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M)
    assert re.search(r"^test:", makefile, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_the_license_file_is_the_license_pyproject_names() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text


def test_the_changelog_has_an_entry_for_the_current_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert f"## {version}" in (REPO / "CHANGELOG.md").read_text()


def test_the_troubleshooting_guide_names_only_reason_codes_that_exist() -> None:
    text = (REPO / "docs" / "troubleshooting.md").read_text()
    named = re.findall(r"^\| (`[^|]+`) \|", text, re.M)
    codes = {code for cell in named for code in re.findall(r"`([a-z_.*]+)`", cell)}
    assert codes
    known = {reason.value for reason in Reason}
    for code in codes:
        if code.endswith(".*"):
            assert any(value.startswith(code[:-1]) for value in known), code
        else:
            assert code in known, code

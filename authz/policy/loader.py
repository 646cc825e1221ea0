"""Reading a policy directory into an immutable `PolicySet` (sources, data, revision).

Layout, as OPA loads a directory: every `*.rego` file is a module; every `data.json` or
`data.yaml` is placed in `data` at the path of its directory (`acl/data.json` becomes
`data.acl`). Files named `*_test.rego` are Rego unit tests: loaded by `policy test`, left
out of the serving engine. The revision is a digest of everything loaded, so two gateways
serving the same revision serve the same policy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authz.errors import ConfigError

_DATA_FILES = ("data.json", "data.yaml", "data.yml")


@dataclass(frozen=True, slots=True)
class PolicySet:
    modules: tuple[tuple[str, str], ...]
    """(path relative to the policy directory, Rego source), sorted by path."""
    data: Mapping[str, Any]
    revision: str


def _is_test_module(path: Path) -> bool:
    return path.name.endswith("_test.rego")


def _read_data_file(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse data file: {exc}") from None


def _place(data: dict[str, Any], segments: tuple[str, ...], value: Any, source: Path) -> None:
    node = data
    for segment in segments:
        child = node.setdefault(segment, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: data path {'.'.join(segments)} collides with a value")
        node = child
    if not isinstance(value, dict):
        if segments:
            raise ConfigError(f"{source}: a data file must hold a JSON object")
        raise ConfigError(f"{source}: the root data file must hold a JSON object")
    for key, item in value.items():
        if key in node:
            raise ConfigError(f"{source}: data key {key!r} is defined twice")
        node[key] = item


def load_policy_set(directory: Path, *, include_tests: bool = False) -> PolicySet:
    """Read every module and data file under `directory`."""
    if not directory.is_dir():
        raise ConfigError(f"policy directory {directory} does not exist")
    digest = hashlib.sha256()
    modules: list[tuple[str, str]] = []
    data: dict[str, Any] = {}
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(directory)
        if path.suffix == ".rego":
            if _is_test_module(path) and not include_tests:
                continue
            source = path.read_text(encoding="utf-8")
            modules.append((relative.as_posix(), source))
        elif path.name in _DATA_FILES:
            source = path.read_text(encoding="utf-8")
            _place(data, relative.parent.parts, _read_data_file(path), path)
        else:
            continue
        digest.update(relative.as_posix().encode() + b"\0" + source.encode() + b"\0")
    if not modules:
        raise ConfigError(f"policy directory {directory} holds no .rego modules")
    return PolicySet(modules=tuple(modules), data=data, revision=digest.hexdigest()[:16])

"""Policy files into an immutable `PolicySet` (modules, tests, data, revision).

Layout, as OPA loads a directory or a bundle: every `*.rego` file is a module; every
`data.json` or `data.yaml` is placed in `data` at the path of its directory (`acl/data.json`
becomes `data.acl`). Files named `*_test.rego` are Rego unit tests: kept apart, run before a
set is served, never loaded into the serving engine. The revision is a digest of every file
(or a bundle's own `.manifest` revision), so two gateways serving the same revision serve
the same policy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from authz.errors import ConfigError

_DATA_FILES = ("data.json", "data.yaml", "data.yml")


@dataclass(frozen=True, slots=True)
class PolicySet:
    modules: tuple[tuple[str, str], ...]
    """(path inside the set, Rego source) of the serving modules, sorted by path."""
    data: Mapping[str, Any]
    revision: str
    tests: tuple[tuple[str, str], ...] = ()
    """(path, Rego source) of the `*_test.rego` modules."""
    origin: str = ""
    """Where the set came from, for logs: a directory, a bundle file or URL."""

    def with_tests(self) -> tuple[tuple[str, str], ...]:
        """Serving and test modules together, as `policy test` compiles them."""
        return tuple(sorted((*self.modules, *self.tests)))


def is_test_module(path: str) -> bool:
    return path.endswith("_test.rego")


def _parse_data(path: str, text: str) -> Any:
    try:
        return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse data file: {exc}") from None


def _place(data: dict[str, Any], segments: tuple[str, ...], value: Any, source: str) -> None:
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


def build_policy_set(
    files: Iterable[tuple[str, str]], origin: str, revision: str | None = None
) -> PolicySet:
    """A set from (POSIX path inside the set, text) pairs; other file kinds are ignored.

    `revision` names the set when its source does (a bundle manifest); otherwise it is a
    digest of every module, test and data file.
    """
    digest = hashlib.sha256()
    modules: list[tuple[str, str]] = []
    tests: list[tuple[str, str]] = []
    data: dict[str, Any] = {}
    for path, text in sorted(files):
        name = PurePosixPath(path)
        if name.suffix == ".rego":
            (tests if is_test_module(path) else modules).append((path, text))
        elif name.name in _DATA_FILES:
            _place(data, name.parent.parts, _parse_data(path, text), f"{origin}: {path}")
        else:
            continue
        digest.update(path.encode() + b"\0" + text.encode() + b"\0")
    if not modules and not tests:
        raise ConfigError(f"{origin} holds no .rego modules")
    return PolicySet(
        modules=tuple(modules),
        data=data,
        revision=revision or digest.hexdigest()[:16],
        tests=tuple(tests),
        origin=origin,
    )


def policy_files(directory: Path) -> list[Path]:
    """The `.rego` modules and data files under `directory`, sorted, leaving out hidden
    files and directories (any path part starting with `.`): a Kubernetes ConfigMap volume
    keeps a second copy of every file in its `..<timestamp>` directory, behind the `..data`
    link the visible files point through, and editors and VCS leave dot files about."""
    return [
        path
        for path in sorted(directory.rglob("*"))
        if not any(part.startswith(".") for part in path.relative_to(directory).parts)
        and (path.suffix == ".rego" or path.name in _DATA_FILES)
    ]


def load_policy_set(directory: Path) -> PolicySet:
    """Read every module, test and data file under `directory` (`policy_files`)."""
    if not directory.is_dir():
        raise ConfigError(f"policy directory {directory} does not exist")
    files: list[tuple[str, str]] = []
    for path in policy_files(directory):
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: cannot read: {exc}") from None
            files.append((path.relative_to(directory).as_posix(), text))
    return build_policy_set(files, origin=f"policy directory {directory}")

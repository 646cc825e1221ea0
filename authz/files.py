"""Reading operator-supplied files (keys, bundles, the deny-list) with a size bound, and
writing the few files the gateway publishes (public key sets) whole or not at all."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from authz.errors import ConfigError


def read_bounded(
    path: Path, max_bytes: int, where: str, error: type[ConfigError] = ConfigError
) -> bytes:
    """The file's bytes; `error` (naming `where`) if it cannot be read or holds more than
    `max_bytes`: a file replaced by something huge must not be read into memory whole."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{where} {path}: cannot read: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise error(f"{where} {path}: larger than {max_bytes} bytes")
    return data


def write_jwks(path: Path, keys: list[Mapping[str, Any]]) -> None:
    """Publish public `keys` as a JWKS at `path`, replaced in one step: a reader sees the
    old set or the new one, never half of either."""
    replace_file(path, json.dumps({"keys": [dict(key) for key in keys]}, indent=2) + "\n")


def replace_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `text` to `path` in one step (a reader sees the old file or the new one),
    created with `mode`: a private key (0o600) is never readable by others, not even while
    it is written. chmod then undoes what the umask took away."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with os.fdopen(
        os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w", encoding="utf-8"
    ) as out:
        out.write(text)
    temporary.chmod(mode)
    temporary.replace(path)

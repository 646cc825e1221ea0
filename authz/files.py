"""Reading operator-supplied files (keys, bundles, the deny-list) with a size bound."""

from __future__ import annotations

from pathlib import Path

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

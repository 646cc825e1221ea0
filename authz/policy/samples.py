"""The sample policies installed with wimse-authz: where they are, and copying them out as
the start of one's own policy directory (`wimse-authz policy samples`).

A wheel carries the repository's `policies/` as the package data of `authz.sample_policies`
(pyproject.toml says which files). Both functions raise `SamplesError`, whose message is one
line naming the path at fault.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

__all__ = [
    "SAMPLES_PACKAGE",
    "SamplesError",
    "SamplesExistError",
    "copy_samples",
    "samples_directory",
]

SAMPLES_PACKAGE = "authz.sample_policies"

# An editable install maps SAMPLES_PACKAGE onto the checkout's policies/ too, but setuptools'
# editable finder cannot import a namespace package (policies/ has no __init__.py) that lies
# outside its parent package's directory: in a checkout the samples are found here instead.
_CHECKOUT_SAMPLES = Path(__file__).resolve().parents[2] / "policies"


class SamplesError(Exception):
    """The sample policies cannot be found or copied; the message says where and why."""


class SamplesExistError(SamplesError):
    """Files of the samples are already in the destination, and overwriting was not asked for."""

    def __init__(self, existing: list[Path]) -> None:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        super().__init__(f"{existing[0]} exists{more}")
        self.existing = existing


def samples_directory() -> Path:
    """The directory holding the installed sample policies (the checkout's `policies/` for an
    editable install). Read it, never write to it: it belongs to the installation."""
    spec = importlib.util.find_spec(SAMPLES_PACKAGE)
    # A namespace package: no module file, only its directory (in a wheel install, exactly one).
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if _CHECKOUT_SAMPLES.is_dir():
        return _CHECKOUT_SAMPLES
    raise SamplesError(
        f"the sample policies are not installed: no package {SAMPLES_PACKAGE} and no "
        f"{_CHECKOUT_SAMPLES}"
    )


def copy_samples(destination: Path, *, overwrite: bool = False) -> list[Path]:
    """Copy every sample policy file into `destination` (created if missing), keeping their
    relative paths; returns the files written. Unless `overwrite`, a file already there
    raises `SamplesExistError` before anything is written: a refused copy changes nothing."""
    source = samples_directory()
    if destination.exists() and not destination.is_dir():
        raise SamplesError(f"{destination} is not a directory")
    sample_files = sorted(path.relative_to(source) for path in source.rglob("*") if path.is_file())
    if not overwrite:
        # A dangling symlink counts: copying onto it would write wherever it points.
        existing = [
            destination / path
            for path in sample_files
            if (destination / path).is_symlink() or (destination / path).exists()
        ]
        if existing:
            raise SamplesExistError(existing)
    written: list[Path] = []
    try:
        for path in sample_files:
            target = destination / path
            target.parent.mkdir(parents=True, exist_ok=True)
            # copyfile, not copy2: the copies are the user's to edit, whatever mode the
            # installed files have (a system-wide install may leave them read-only).
            shutil.copyfile(source / path, target)
            written.append(target)
    except OSError as exc:
        reason = f"{exc.filename}: {exc.strerror}"
        raise SamplesError(f"cannot copy into {destination}: {reason}") from None
    return written

"""`make test` needs nothing beside the repository: a clone with no `../shared` next to it
collects the whole suite (every test module imports and every fixture file it names at
import time is in the repository) and passes the tests of the published vectors, which are
copies in tests/vectors/published (their origin and SHA-256 in SOURCES.md); no test reads
the reference material. (CI runs the whole `make test` on such a clone.)"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from authz.devtools.stack import REPO_ROOT


def test_a_lone_clone_collects_the_whole_suite(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "lone" / "main"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True, timeout=120)
    assert not (clone.parent / "shared").exists()
    collected = pytest_in(clone, "--collect-only")
    assert re.search(r"\d+ tests collected", collected), collected[-1000:]
    vectors = pytest_in(clone, "tests/vectors")
    assert re.search(r"\d+ passed", vectors), vectors[-1000:]


def pytest_in(clone: Path, *args: str) -> str:
    """The output of pytest run with `args` in `clone`, which must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_the_published_copies_are_the_files_sources_md_names() -> None:
    published = REPO_ROOT / "tests" / "vectors" / "published"
    listed = dict(
        re.findall(
            r"^\| `([\w.-]+\.json)` \| `([0-9a-f]{64})` \|",
            (published / "SOURCES.md").read_text(),
            re.M,
        )
    )
    files = {path.name: path for path in published.glob("*.json")}
    assert listed.keys() == files.keys()
    for name, digest in listed.items():
        assert hashlib.sha256(files[name].read_bytes()).hexdigest() == digest, name


# A path into the reference material: `../shared`, `parent / "shared" / ...`, `shared/specs`.
_READS_SHARED = re.compile(
    r"""\.\./shared/|/\s*["']shared["']\s*/|["']shared/(?:vectors|specs|design)"""
)


def test_no_test_reads_the_reference_material() -> None:
    """The published vectors the tests use live in tests/vectors/published (SOURCES.md)."""
    readers = [
        path.relative_to(REPO_ROOT)
        for path in (REPO_ROOT / "tests").rglob("*.py")
        if path.name != Path(__file__).name and _READS_SHARED.search(path.read_text())
    ]
    assert readers == []

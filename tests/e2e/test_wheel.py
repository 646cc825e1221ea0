"""The built wheel carries the sample policies: installed into a fresh virtual environment,
with no checkout in reach, `wimse-authz policy samples --out DIR` copies them out and
`wimse-authz policy test DIR` passes every one of their tests.

The wheel is built from a copy of the working tree (pyproject.toml, README.md, LICENSE,
authz/, policies/), so the build's `build/` and `*.egg-info` never land in the repository, and
uncommitted work is what gets built. It is installed with `--no-deps --no-index`; its
dependencies come from this test environment instead, through a `.pth` file in the fresh
environment naming this one's site-packages. Not from the package registry: CI reaches no
network but the registry, its time is limited, and the locked versions this environment
already holds are the ones under test (a resolve would take whatever the registry serves
today). A `.pth` line that is a plain path only extends `sys.path`: the `.pth` files in that
directory are not run, among them the editable install's import hook, so the checkout's
`authz` cannot stand in for the wheel's; the test asserts that it does not.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz.devtools.stack import POLICY_DIR, REPO_ROOT

pytestmark = pytest.mark.e2e

# What the wheel is built from (pyproject.toml says which of their files it takes).
BUILD_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "authz", "policies")
SAMPLES_IN_WHEEL = "authz/sample_policies/"
# The files of policies/ that are sample policies (pyproject.toml's package-data for them).
POLICY_DATA_FILES = {"data.json", "data.yaml", "data.yml"}


def sample_policy_files(directory: Path) -> dict[str, bytes]:
    """Relative path → content of the sample policies in `directory`: Rego (tests included),
    data files and the README."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
        and (path.suffix == ".rego" or path.name in POLICY_DATA_FILES or path.name == "README.md")
    }


def isolated_environment(bin_first: Path | None) -> dict[str, str]:
    """This process's environment without what would point Python or pip elsewhere, with
    `bin_first` (a virtual environment's bin/) first on PATH."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
    }
    # This machine's pip configuration may name indexes and constraints; nothing is fetched.
    environment["PIP_CONFIG_FILE"] = os.devnull
    if bin_first is not None:
        environment["PATH"] = f"{bin_first}{os.pathsep}{environment.get('PATH', '')}"
    return environment


def run(
    argv: list[str | Path], cwd: Path, bin_first: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `argv` to completion; it must succeed."""
    result = subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        env=isolated_environment(bin_first),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"{argv}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


@dataclass(frozen=True)
class FreshInstall:
    """A virtual environment holding the wheel and nothing else of the project."""

    directory: Path

    def run(self, program: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """This environment's `program` (python, wimse-authz), its bin/ first on PATH."""
        bin_directory = self.directory / "bin"
        return run([bin_directory / program, *args], cwd, bin_directory)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, source / name)
    wheels = tmp_path_factory.mktemp("wheels")
    pip_wheel = [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "-q"]
    run(
        [*pip_wheel, "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, source],
        source,
    )
    [built] = wheels.glob("wimse_authz-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_install(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> FreshInstall:
    directory = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", directory], directory)
    # This environment's pip, run by the fresh interpreter (`--python`): it sees only the fresh
    # environment, which does not list this one's packages yet (there the editable install
    # would count as wimse-authz already installed).
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python"]
    run(
        [*pip, directory / "bin" / "python", "install", "-q", "--no-deps", "--no-index", wheel],
        directory,
    )
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site_packages = Path(
        FreshInstall(directory).run("python", "-c", purelib, cwd=directory).stdout.strip()
    )
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site_packages / "locked-dependencies.pth").write_text(
        "".join(f"{path}\n" for path in ours), encoding="utf-8"
    )
    return FreshInstall(directory)


def test_the_wheel_holds_the_sample_policies_and_every_module(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    samples = {
        name.removeprefix(SAMPLES_IN_WHEEL) for name in names if name.startswith(SAMPLES_IN_WHEEL)
    }
    assert samples == set(sample_policy_files(POLICY_DIR))
    modules = {
        path.relative_to(REPO_ROOT).as_posix() for path in (REPO_ROOT / "authz").rglob("*.py")
    }
    assert modules <= names, sorted(modules - names)


def test_an_installed_wheel_gives_out_sample_policies_whose_tests_pass(
    fresh_install: FreshInstall, tmp_path: Path
) -> None:
    outside = tmp_path / "work"  # no authz/ or policies/ in reach of the working directory
    outside.mkdir()
    probe = (
        "import sys, authz.cli; print(authz.__file__); "
        "print(sorted(name for name in sys.modules if name.startswith('__editable__')))"
    )
    imported_from, editable_hooks = fresh_install.run(
        "python", "-c", probe, cwd=outside
    ).stdout.splitlines()
    assert Path(imported_from).is_relative_to(fresh_install.directory)
    assert editable_hooks == "[]", "the checkout's editable install hook ran"

    located = fresh_install.run("wimse-authz", "policy", "samples", "--path", cwd=outside)
    assert Path(located.stdout.strip()).is_relative_to(fresh_install.directory)

    fresh_install.run("wimse-authz", "policy", "samples", "--out", "policies", cwd=outside)
    assert sample_policy_files(outside / "policies") == sample_policy_files(POLICY_DIR)

    tested = fresh_install.run("wimse-authz", "policy", "test", "policies", cwd=outside)
    summary = tested.stdout.strip().splitlines()[-1]
    # "PASS: n/n": every test ran and passed (no tests at all would have exited non-zero).
    assert re.fullmatch(r"PASS: (\d+)/\1", summary), tested.stdout[-3000:]

"""The container image without a container runtime: what `deploy/container/Dockerfile`
declares (user, entrypoint, environment, writable paths, where the virtual environment lives),
and its runtime filesystem rebuilt on this machine, to run commands under the image's
constraints in `sandbox.py`.

What is real and what stands in:
- the virtual environment is at the image's path, with the project installed into it as the
  Dockerfile installs it (from the files its build stage copies, `--no-deps --no-index
  --no-build-isolation`, not editable);
- its locked dependencies are those of the test's own virtual environment, added to its path
  by a `.pth` file: installing `requirements/image.lock` needs a package registry, which tests
  may not use. `test_dockerfile.py` checks that they are the lock's versions;
- the interpreter is the test's (at its own path, made reachable for the image's uid), standing
  in for the base image's `/usr/local/bin/python3`; the rest of the root filesystem is the
  host's, read-only.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from authz.devtools.stack import REPO_ROOT
from tests.container.dockerfile import parse

DOCKERFILE = REPO_ROOT / "deploy" / "container" / "Dockerfile"
SANDBOX = Path(__file__).with_name("sandbox.py")
BASE_IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
"""What the base image (python:3.11-slim-bookworm) sets that the Dockerfile's ENV builds on."""
WRITABLE_LABEL = "wimse-authz.writable-paths"


@dataclass(frozen=True, slots=True)
class ImageFacts:
    uid: int
    gid: int
    env: dict[str, str]
    """The runtime environment: the base image's, the final stage's ENV, and HOME (which a
    runtime takes from the user's passwd entry)."""
    build_env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    venv: Path
    writable: list[Path]
    workdir: str
    build_sources: list[str]
    """What the build stage copies from the build context (paths in the repository)."""

    @property
    def config_path(self) -> Path:
        return Path(self.entrypoint[self.entrypoint.index("--config") + 1])

    @property
    def command(self) -> list[str]:
        """What a runtime runs when no arguments are given."""
        return [*self.entrypoint, *self.cmd]


def image_facts() -> ImageFacts:
    dockerfile = parse(DOCKERFILE)
    final = dockerfile.final
    build = dockerfile.stage("build")
    user = final.last("USER")
    entrypoint = final.last("ENTRYPOINT")
    cmd = final.last("CMD")
    assert user is not None
    assert entrypoint is not None
    assert cmd is not None
    uid, _, gid = user.arguments.partition(":")
    env = final.env(BASE_IMAGE_ENV)
    home = next(
        word.partition("=")[2] or words[index + 1]
        for instruction in final.all("RUN")
        for words in [instruction.words()]
        for index, word in enumerate(words)
        if word.startswith("--home-dir")
    )
    workdir = final.last("WORKDIR")
    return ImageFacts(
        uid=int(uid),
        gid=int(gid),
        env={**env, "HOME": home},
        build_env=build.env(BASE_IMAGE_ENV),
        entrypoint=entrypoint.exec_form() or [],
        cmd=cmd.exec_form() or [],
        venv=Path(env["VIRTUAL_ENV"]),
        writable=[Path(p) for p in final.labels()[WRITABLE_LABEL].split()],
        workdir=workdir.arguments if workdir is not None else "/",
        build_sources=[
            source for copy in build.copies() if copy.from_stage is None for source in copy.sources
        ],
    )


def skip_or_fail(reason: str) -> NoReturn:
    """Skip, except in CI (`CI=true`), where a test that cannot run is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: this test must run in CI)")
    pytest.skip(reason)


def sandbox_unavailable() -> str | None:
    """Why commands cannot be run under the image's constraints here, or None."""
    if os.geteuid() != 0:
        return "needs root: mounts in a private mount namespace (unshare -m) and setpriv"
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux) not found"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return f"unshare --mount is not permitted here: {probe.stderr.strip()}"
    return None


class SandboxRefused(Exception):
    """The kernel refused a mount the sandbox needs (no overlayfs, say)."""


def sandbox_command(spec: dict[str, Any], spec_path: Path) -> list[str]:
    """The command line that runs `spec` (see sandbox.py) in a new mount namespace."""
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    return [
        shutil.which("unshare") or "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        sys.executable,
        str(SANDBOX),
        str(spec_path),
    ]


LOCKED_DEPENDENCIES = Path("/opt/locked-dependencies")
"""Where the sandbox shows this test environment's packages (the image's locked
dependencies): bound there, not at their own paths, which may lie under a path the image
declares writable (a clone under /tmp: the image's fresh /tmp would hide them). Not under
the image's venv path, even as a string prefix: pip takes what starts with its prefix for
its own environment, and would try to uninstall the test environment's project from it."""


def _locked_binds() -> list[dict[str, Any]]:
    """This test environment's package directories, each bound under `LOCKED_DEPENDENCIES`."""
    directories = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    return [
        {"source": directory, "target": str(LOCKED_DEPENDENCIES / str(index))}
        for index, directory in enumerate(directories)
    ]


def _scratch(directory: Path) -> Path:
    scratch = directory / "scratch"
    scratch.mkdir(parents=True)
    return scratch


def build_image_venv(directory: Path, facts: ImageFacts) -> Path:
    """The image's virtual environment, built in `directory` as if at `facts.venv` (returns
    where it is on this machine)."""
    source = directory / "src"
    for name in facts.build_sources:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name)
    venv = directory / "venv"
    venv.mkdir(mode=0o755)
    python = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    interpreter = Path(sys.base_prefix).resolve() / "bin" / python
    site_packages = facts.venv / "lib" / python / "site-packages"
    locked_paths = " ".join(shlex.quote(bind["target"]) for bind in _locked_binds())
    script = " && ".join(
        [
            f"{shlex.quote(str(interpreter))} -m venv --without-pip {facts.venv}",
            f"printf '%s\\n' {locked_paths} > {site_packages}/locked-dependencies.pth",
            f"{facts.venv}/bin/python -m pip install --quiet --no-deps --no-index "
            f"--no-build-isolation {shlex.quote(str(source))}",
        ]
    )
    spec = {
        "scratch": str(_scratch(directory)),
        "binds": [
            {"source": str(venv), "target": str(facts.venv), "writable": True},
            *_locked_binds(),
        ],
        "uid": None,
        # The build stage's environment; no pip configuration but the Dockerfile's (this
        # machine's would add indexes and constraints the image does not have).
        "env": {**facts.build_env, "PIP_CONFIG_FILE": os.devnull},
        "argv": ["/bin/sh", "-ec", script],
    }
    result = subprocess.run(
        sandbox_command(spec, directory / "build.json"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0 and "not permitted" in result.stderr:
        raise SandboxRefused(result.stderr.strip())
    assert result.returncode == 0, result.stdout + result.stderr
    return venv


def image_spec(
    directory: Path, facts: ImageFacts, venv: Path, etc: Path, argv: list[str]
) -> dict[str, Any]:
    """Running `argv` as the image runs its entrypoint: `venv` (from `build_image_venv`) at the
    image's path, `etc` as the configuration's directory, the root read-only but for the
    declared writable paths, as the image's user, with the image's environment only."""
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "scratch": str(_scratch(directory)),
        "expose": [str(Path(sys.base_prefix).resolve())],
        "binds": [
            {"source": str(venv), "target": str(facts.venv)},
            {"source": str(etc), "target": str(facts.config_path.parent)},
            *_locked_binds(),
        ],
        "read_only": True,
        "writable": [str(path) for path in facts.writable],
        "uid": facts.uid,
        "gid": facts.gid,
        "env": facts.env,
        "cwd": facts.workdir,
        "argv": argv,
    }

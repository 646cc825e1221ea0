"""deploy/kubernetes, tested without a cluster: `kubectl kustomize` renders the base and every
overlay; every rendered object validates strictly against the Kubernetes schemas
(kubernetes-validate) or the vendored custom-resource schemas (tests/schemas/kubernetes);
what the objects say agrees with the gateway configuration they carry; and that
configuration, read from a directory laid out as the kubelet would mount the volumes
(with test certificates and a test password standing in for the Secrets, which an operator
creates), passes `wimse-authz config check`, its policies `policy test`, and the sidecar
overlay's Envoy bootstrap `envoy --mode validate`. No cluster runs here: admission
(Pod Security, CEL rules of the custom resources) and the controllers are not exercised."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from authz.config import parse_config
from authz.devtools.certs import CertificateAuthority
from authz.devtools.keys import generate_private_jwk, private_key_from_jwk
from authz.devtools.mint import mint_wit
from authz.devtools.stack import REPO_ROOT, envoy_binary
from authz.outbound.envoy_routes import egress_envoy_problems
from tests.e2e.k8s_manifests import (
    KUSTOMIZATIONS,
    SCHEMA_DIR,
    GatewayPod,
    Manifest,
    config_map_files,
    containers,
    find,
    gateway_pod,
    mirror_mounts,
    namespace_of,
    one,
    pod_templates,
    render,
    rewrite_paths,
    validation_problems,
    volume_files,
)

pytestmark = pytest.mark.e2e

NAMES = tuple(KUSTOMIZATIONS)
ISTIO_DIR = KUSTOMIZATIONS["istio"]
ENVOY_DIR = REPO_ROOT / "deploy" / "envoy"
POLICY_DIR = REPO_ROOT / "policies"
GATEWAY_IMAGE = "ghcr.io/wimse-authz/wimse-authz"
SERVICE_SELECTION_KEY = "service_selection"
"""The gateway setting the istio overlay uses to choose the protected service by the
destination principal."""

FILE_KEYS = {
    "cert_file",
    "key_file",
    "client_ca_file",
    "jwks_file",
    "spiffe_bundle_file",
    "password_file",
    "ca_file",
    "file",
    "directory",
}
"""Configuration keys whose value is a file or directory the gateway reads."""
PRIVATE_FILE_KEYS = {"key_file", "password_file"}


@pytest.fixture(scope="module", params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture(scope="module")
def rendered(name: str) -> tuple[Manifest, ...]:
    return render(name)


def gateway_config(manifests: tuple[Manifest, ...]) -> dict[str, Any]:
    """The gateway.yaml the gateway pod mounts at its --config path."""
    pod = gateway_pod(manifests)
    files = pod_files(manifests, pod, stand_in_secrets())
    text = files[str(pod.config_path)]
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@cache
def stand_in_secrets() -> dict[str, dict[str, str]]:
    """Stand-ins for the Secrets an operator creates (README): a CA, the gateway's
    certificate from it, a Redis password, and the sidecar workload's WIT and key (as its
    issuer writes them)."""
    ca = CertificateAuthority.create("wimse-authz test ca")
    names = [
        "wimse-authz.wimse-authz.svc",
        "wimse-authz-headless.wimse-authz.svc.cluster.local",
    ]
    gateway = ca.issue("wimse-authz", dns_names=names)
    password = "test-password-not-for-use"
    return {
        "wimse-authz-tls": {
            "tls.crt": gateway.chain_pem.decode(),
            "tls.key": gateway.key_pem.decode(),
            "ca.crt": ca.cert_pem.decode(),
        },
        "wimse-authz-redis": {"password": password, "redis-auth.conf": f"requirepass {password}"},
        "orders-workload-credentials": workload_credentials(
            "spiffe://prod.example.com/ns/shop/sa/orders"
        ),
    }


def workload_credentials(workload_id: str) -> dict[str, str]:
    """A WIT for `workload_id` (from a throwaway issuer) and the PEM key it confirms."""
    key = generate_private_jwk("ES256")
    wit = mint_wit(generate_private_jwk("ES256"), workload_id, key)
    pem = private_key_from_jwk(key).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {"wit.jwt": wit, "key.pem": pem.decode()}


def pod_files(
    manifests: tuple[Manifest, ...], pod: GatewayPod, secrets: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """Absolute path -> content of every file the gateway container's mounts hold."""
    volumes = {volume["name"]: volume for volume in pod.spec.get("volumes", [])}
    files = {}
    for mount in pod.container.get("volumeMounts", []):
        contents = volume_files(
            manifests, volumes[mount["name"]], namespace_of(pod.workload), secrets
        )
        for relative, (content, _mode) in contents.items():
            files[str(PurePosixPath(mount["mountPath"]) / relative)] = content
    return files


def config_paths(node: Any, config_dir: PurePosixPath) -> Iterator[tuple[str, PurePosixPath]]:
    """(key, absolute path) for every file or directory the configuration names."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in FILE_KEYS and isinstance(value, str):
                yield key, config_dir / value
            else:
                yield from config_paths(value, config_dir)
    elif isinstance(node, list):
        for item in node:
            yield from config_paths(item, config_dir)


def listener_ports(config: Mapping[str, Any]) -> list[int]:
    return [
        int(listener["address"].rpartition(":")[2])
        for listener in config["server"]["listeners"]
        if not listener["address"].startswith("unix:")
    ]


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pods_in(manifests: tuple[Manifest, ...], namespace: str) -> list[dict[str, str]]:
    """The labels of every pod template in `namespace`."""
    return [
        dict(template["metadata"].get("labels", {}))
        for workload, template in pod_templates(manifests)
        if namespace_of(workload) == namespace
    ]


def service_selecting(manifests: tuple[Manifest, ...], pod: GatewayPod) -> list[Manifest]:
    labels = pod.template["metadata"]["labels"]
    return [
        service
        for service in find(manifests, "Service")
        if namespace_of(service) == namespace_of(pod.workload)
        and selects(service["spec"].get("selector", {}), labels)
    ]


# Rendering and strict validation


def test_every_kustomization_renders(rendered: tuple[Manifest, ...]) -> None:
    assert rendered
    assert all({"apiVersion", "kind", "metadata"} <= set(m) for m in rendered)


def test_every_rendered_object_validates_strictly(rendered: tuple[Manifest, ...]) -> None:
    problems = {
        f"{m['kind']}/{m['metadata']['name']}": validation_problems(m)
        for m in rendered
        if validation_problems(m)
    }
    assert problems == {}


def test_strict_validation_refuses_unknown_fields_and_kinds() -> None:
    """The check above is not vacuous, for Kubernetes' kinds and the custom ones alike."""
    deployment = copy.deepcopy(one(render("base"), "Deployment", "wimse-authz"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFS"] = True
    assert validation_problems(deployment)
    policy = copy.deepcopy(one(render("envoy-gateway"), "SecurityPolicy"))
    policy["spec"]["extAuth"]["failClosed"] = True
    assert validation_problems(policy)
    authorization = copy.deepcopy(find(render("istio"), "AuthorizationPolicy")[0])
    authorization["spec"]["action"] = "EXTERNAL"
    assert validation_problems(authorization)
    authorization["metadata"]["labelz"] = {}
    assert any("metadata" in problem for problem in validation_problems(authorization))
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validation_problems(unknown) == ["no schema for example.com/v1 Widget: unknown kind"]


def test_the_vendored_schemas_are_recorded_in_sources() -> None:
    sources = (SCHEMA_DIR / "SOURCES.md").read_text(encoding="utf-8")
    for path in SCHEMA_DIR.rglob("*.json"):
        group, version, kind = path.relative_to(SCHEMA_DIR).parts
        assert f"{group}/{version}" in sources
        assert kind.removesuffix(".json") in sources


def test_the_istio_mesh_configuration_validates_and_both_forms_agree() -> None:
    """The extension provider cannot be a rendered object (it is in Istio's mesh config):
    the IstioOperator form and the Helm values form are checked here instead."""
    schema = json.loads((SCHEMA_DIR / "install.istio.io/v1alpha1/IstioOperator.json").read_text())
    operator = yaml.safe_load((ISTIO_DIR / "mesh-config/istio-operator.yaml").read_text())
    helm = yaml.safe_load((ISTIO_DIR / "mesh-config/helm-values.yaml").read_text())
    jsonschema.Draft4Validator(schema).validate(operator)
    assert helm == {"meshConfig": operator["spec"]["meshConfig"]}
    broken = copy.deepcopy(operator)
    broken["spec"]["meshConfig"]["extensionProviders"][0]["envoyExtAuthzGrpc"]["failClosed"] = 1
    assert not jsonschema.Draft4Validator(schema).is_valid(broken)


# What the objects say agrees with the configuration they carry


def test_probes_use_the_configured_diagnostics_port(rendered: tuple[Manifest, ...]) -> None:
    pod = gateway_pod(rendered)
    diagnostics = port_of(gateway_config(rendered)["diagnostics"]["address"])
    probes = [pod.container[key] for key in pod.container if key.endswith("Probe")]
    assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(pod.container)
    for probe in probes:
        assert pod.port(probe["httpGet"]["port"]) == diagnostics
    paths = {pod.container[key]["httpGet"]["path"] for key in ("livenessProbe", "readinessProbe")}
    assert paths == {"/healthz", "/readyz"}


def test_services_target_the_listener_port(rendered: tuple[Manifest, ...]) -> None:
    pod = gateway_pod(rendered)
    ports = listener_ports(gateway_config(rendered))
    services = service_selecting(rendered, pod)
    if not ports:
        gateway_ports = {int(p["containerPort"]) for p in pod.container.get("ports", [])}
        targets = {pod.port(p["targetPort"]) for s in services for p in s["spec"]["ports"]}
        assert not targets & gateway_ports, "a gateway on a Unix socket has no Service"
        return
    assert {s["metadata"]["name"] for s in services} == {"wimse-authz", "wimse-authz-headless"}
    for service in services:
        for port in service["spec"]["ports"]:
            assert pod.port(port["targetPort"]) in ports


def test_the_headless_service_is_what_the_strict_dns_envoy_example_resolves() -> None:
    rendered = render("base")
    headless = one(rendered, "Service", "wimse-authz-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"].get("publishNotReadyAddresses", False) is False
    example = yaml.safe_load((ENVOY_DIR / "gateway-kubernetes.yaml").read_text())
    cluster = next(c for c in example["static_resources"]["clusters"] if c["name"] == "wimse_authz")
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    socket_address = address["address"]["socket_address"]
    dns_name = f"wimse-authz-headless.{namespace_of(headless)}.svc.cluster.local"
    assert cluster["type"] == "STRICT_DNS"
    assert socket_address["address"] == dns_name
    assert socket_address["port_value"] == headless["spec"]["ports"][0]["port"]
    assert cluster["transport_socket"]["typed_config"]["sni"] == dns_name


def selector_of(manifest: Manifest) -> Mapping[str, str] | None:
    """The pod labels an object applies to, for the kinds that select pods."""
    spec = manifest.get("spec", {})
    selector: Mapping[str, str] | None = {
        "Service": lambda: spec.get("selector"),
        "PodDisruptionBudget": lambda: spec["selector"]["matchLabels"],
        "NetworkPolicy": lambda: spec["podSelector"]["matchLabels"],
        "Sidecar": lambda: spec["workloadSelector"]["labels"],
        "AuthorizationPolicy": lambda: spec["selector"]["matchLabels"],
    }.get(manifest["kind"], lambda: None)()
    return selector


def test_selectors_select_the_pods_they_are_for(rendered: tuple[Manifest, ...]) -> None:
    """In every namespace whose pods are rendered here (an AuthorizationPolicy for a
    workload of yours, in its namespace, selects pods that are not)."""
    for workload, template in pod_templates(rendered):
        assert selects(workload["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
    namespaces = {namespace_of(workload) for workload, _ in pod_templates(rendered)}
    for manifest in rendered:
        selector = selector_of(manifest)
        if selector is None or namespace_of(manifest) not in namespaces:
            continue
        pods = pods_in(rendered, namespace_of(manifest))
        assert any(selects(selector, labels) for labels in pods), (
            f"{manifest['kind']}/{manifest['metadata']['name']} selects no pod"
        )
    for hpa in find(rendered, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert find(rendered, target["kind"], target["name"])


def test_every_path_the_configuration_reads_is_mounted(rendered: tuple[Manifest, ...]) -> None:
    pod = gateway_pod(rendered)
    files = pod_files(rendered, pod, stand_in_secrets())
    config = gateway_config(rendered)
    named = list(config_paths(config, pod.config_path.parent))
    assert named
    for key, path in named:
        inside = [f for f in files if f == str(path) or f.startswith(f"{path}/")]
        assert inside, f"{key}: {path} is not in any volume the gateway mounts"
    # An outbound socket's own directory is created by the gateway (closed to others)
    # inside the mounted one.
    socket_dirs = [
        PurePosixPath(listener["address"].removeprefix("unix:")).parents[
            1 if listener.get("mode") == "outbound" else 0
        ]
        for listener in config["server"]["listeners"]
        if listener["address"].startswith("unix:")
    ]
    writable = {
        m["mountPath"]
        for m in pod.container["volumeMounts"]
        if not m.get("readOnly") and "emptyDir" in volume(pod, m["name"])
    }
    assert all(str(directory) in writable for directory in socket_dirs)


def volume(pod: GatewayPod, name: str) -> Manifest:
    found: Manifest = next(v for v in pod.spec["volumes"] if v["name"] == name)
    return found


def test_private_keys_come_only_from_secret_volumes(rendered: tuple[Manifest, ...]) -> None:
    pod = gateway_pod(rendered)
    config = gateway_config(rendered)
    mounts = sorted(pod.container["volumeMounts"], key=lambda m: -len(m["mountPath"]))
    for key, path in config_paths(config, pod.config_path.parent):
        if key not in PRIVATE_FILE_KEYS:
            continue
        mount = next(m for m in mounts if str(path).startswith(m["mountPath"].rstrip("/") + "/"))
        source = volume(pod, mount["name"])
        assert "secret" in source, f"{key} {path} is not on a Secret volume"
        assert source["secret"]["defaultMode"] == 0o400
    for _, template in pod_templates(rendered):
        for source in template["spec"].get("volumes", []):
            if "secret" in source:
                assert source["secret"]["defaultMode"] == 0o400, source["name"]


PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


def private_jwks(node: Any) -> bool:
    if isinstance(node, dict):
        return ("kty" in node and "d" in node) or any(private_jwks(v) for v in node.values())
    if isinstance(node, list):
        return any(private_jwks(item) for item in node)
    return False


def config_map_secrets(value: str) -> list[str]:
    """What in one ConfigMap value looks like a private key: a PEM block, or a JWK with `d`
    in a JSON or YAML document."""
    found = ["PEM private key"] if PEM_PRIVATE_KEY.search(value) else []
    try:
        document = yaml.safe_load(value)
    except yaml.YAMLError:
        document = None
    if private_jwks(document):
        found.append("JWK with d")
    return found


def test_no_config_map_holds_a_private_key(rendered: tuple[Manifest, ...]) -> None:
    for config_map in find(rendered, "ConfigMap"):
        for key, value in config_map.get("data", {}).items():
            assert config_map_secrets(value) == [], f"{config_map['metadata']['name']}/{key}"
        assert "binaryData" not in config_map


def test_the_private_key_check_finds_pem_keys_and_private_jwks() -> None:
    secrets = stand_in_secrets()["wimse-authz-tls"]
    assert config_map_secrets(secrets["tls.key"]) == ["PEM private key"]
    assert config_map_secrets(secrets["tls.crt"]) == []
    inline = yaml.safe_dump(
        {"jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "a", "d": "b"}]}}
    )
    assert config_map_secrets(inline) == ["JWK with d"]


def test_pods_meet_the_restricted_pod_security_standard(rendered: tuple[Manifest, ...]) -> None:
    for workload, template in pod_templates(rendered):
        spec = template["spec"]
        where = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec.get("automountServiceAccountToken") is False, where
        assert not spec.get("hostNetwork"), where
        assert not spec.get("hostPID"), where
        assert not any("hostPath" in v for v in spec.get("volumes", [])), where
        for container in containers(spec):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context.get("runAsUser", spec["securityContext"].get("runAsUser", 1)) != 0


def test_namespaces_enforce_the_restricted_profile(rendered: tuple[Manifest, ...]) -> None:
    for namespace in find(rendered, "Namespace"):
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_gateway_has_its_own_account_and_no_api_access(
    rendered: tuple[Manifest, ...],
) -> None:
    pod = gateway_pod(rendered)
    account = one(rendered, "ServiceAccount", pod.spec["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["name"] != "default"
    kinds = {m["kind"] for m in rendered}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def test_the_gateway_listener_is_mutual_tls_or_local(rendered: tuple[Manifest, ...]) -> None:
    """Beyond loopback and Unix sockets, every listener wants client certificates from a CA
    and names the clients it admits (the NetworkPolicy is only defence in depth)."""
    for listener in gateway_config(rendered)["server"]["listeners"]:
        address = listener["address"]
        if address.startswith(("unix:", "127.0.0.1:")):
            continue
        tls = listener["tls"]
        assert tls["client_ca_file"], address
        assert tls["allowed_clients"], address
        assert not listener.get("allow_plaintext", False)


def test_the_network_policy_admits_checks_and_scrapes_only(rendered: tuple[Manifest, ...]) -> None:
    """Diagnostics from the monitoring namespace only; the gRPC listener from selected
    namespaces only; nothing else open but the port an Envoy in the pod serves."""
    pod = gateway_pod(rendered)
    labels = pod.template["metadata"]["labels"]
    [policy] = [
        p
        for p in find(rendered, "NetworkPolicy")
        if selects(p["spec"]["podSelector"]["matchLabels"], labels)
    ]
    config = gateway_config(rendered)
    diagnostics = port_of(config["diagnostics"]["address"])
    listeners = set(listener_ports(config))
    open_ports = set()
    for rule in policy["spec"]["ingress"]:
        ports = {pod.port(p["port"]) for p in rule["ports"]}
        assert ports, "every rule names its ports"
        if diagnostics in ports:
            assert ports == {diagnostics}
            assert rule["from"] == [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ]
        elif ports & listeners:
            assert rule["from"]
            assert all("namespaceSelector" in peer for peer in rule["from"])
        else:
            open_ports |= ports
    envoy_ports = {
        int(port["containerPort"])
        for container in containers(pod.spec)
        if container["name"] == "envoy"
        for port in container["ports"]
    }
    assert open_ports <= envoy_ports


def test_redis_never_evicts_and_is_what_the_gateway_uses(rendered: tuple[Manifest, ...]) -> None:
    redis = one(rendered, "StatefulSet", "wimse-authz-redis")
    namespace = namespace_of(redis)
    conf_volume = next(v for v in redis["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    conf = config_map_files(rendered, conf_volume["configMap"]["name"], namespace)["redis.conf"]
    settings = dict(
        line.split(None, 1) for line in conf.splitlines() if line and not line.startswith("#")
    )
    assert settings["maxmemory-policy"] == "noeviction"
    assert re.fullmatch(r"[1-9][0-9]*(mb|gb)", settings["maxmemory"])
    assert settings["appendonly"] == "yes"
    container = redis["spec"]["template"]["spec"]["containers"][0]
    conf_mount = next(m for m in container["volumeMounts"] if m["name"] == conf_volume["name"])
    assert container["command"] == ["redis-server", f"{conf_mount['mountPath']}/redis.conf"]
    url = gateway_config(rendered)["replay"]["redis"]["url"]
    service = one(rendered, "Service", "wimse-authz-redis")
    assert url == f"redis://wimse-authz-redis:{service['spec']['ports'][0]['port']}/0"
    assert namespace_of(service) == namespace_of(gateway_pod(rendered).workload)
    gateway_labels = gateway_pod(rendered).template["metadata"]["labels"]
    policy = one(rendered, "NetworkPolicy", "wimse-authz-redis")
    admitted = [peer["podSelector"]["matchLabels"] for peer in policy["spec"]["ingress"][0]["from"]]
    assert any(selects(selector, gateway_labels) for selector in admitted)


def test_every_rendering_runs_the_same_gateway_image() -> None:
    images = {
        container["image"]
        for name in NAMES
        for _, template in pod_templates(render(name))
        for container in containers(template["spec"])
        if container["image"].startswith(GATEWAY_IMAGE)
    }
    assert len(images) == 1, images
    assert re.fullmatch(rf"{re.escape(GATEWAY_IMAGE)}:[0-9][\w.-]*", images.pop())


def test_the_policies_config_map_holds_every_policy_file_at_its_path() -> None:
    """policies/kustomization.yaml lists every module, test and data file, and the gateway's
    volume puts each back at its path under policies/: a file added to policies/ and not to
    the lists would be missing in the cluster."""
    expected = {
        str(path.relative_to(POLICY_DIR)): path.read_text(encoding="utf-8")
        for path in POLICY_DIR.rglob("*")
        if path.is_file() and (path.suffix == ".rego" or path.name.startswith("data."))
    }
    for name in NAMES:
        rendered = render(name)
        pod = gateway_pod(rendered)
        files = pod_files(rendered, pod, stand_in_secrets())
        policy_dir = pod.config_path.parent / gateway_config(rendered)["policy"]["directory"]
        mounted = {
            str(PurePosixPath(path).relative_to(policy_dir)): content
            for path, content in files.items()
            if path.startswith(f"{policy_dir}/")
        }
        assert mounted == expected, name


# The configuration, mounted as the kubelet would, passes the gateway's own checks


@pytest.fixture(scope="module")
def mirrored(name: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The gateway container's mounts under a temporary root (each volume laid out as the
    kubelet lays it out), the configuration's absolute paths moved under that root;
    returns (root, the configuration file)."""
    rendered = render(name)
    pod = gateway_pod(rendered)
    root = tmp_path_factory.mktemp(f"pod-{name}")
    mounts = mirror_mounts(rendered, pod, root, stand_in_secrets())
    config_file = root / str(pod.config_path).lstrip("/")
    config = rewrite_paths(yaml.safe_load(config_file.read_text()), sorted(mounts), root)
    # Through the volume's symbolic link, into its payload: the layout stays the kubelet's.
    config_file.resolve().write_text(yaml.safe_dump(config, sort_keys=False))
    return root, config_file


def wimse_authz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_configuration_passes_config_check(name: str, mirrored: tuple[Path, Path]) -> None:
    _, config_file = mirrored
    result = wimse_authz("config", "check", "--config", str(config_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_the_mounted_policies_pass_their_tests(name: str, mirrored: tuple[Path, Path]) -> None:
    _, config_file = mirrored
    policy_dir = config_file.parent / yaml.safe_load(config_file.read_text())["policy"]["directory"]
    result = wimse_authz("policy", "test", str(policy_dir))
    assert result.returncode == 0, result.stdout + result.stderr


# The sidecar overlay


def sidecar_envoy(rendered: tuple[Manifest, ...]) -> tuple[Manifest, dict[str, Any]]:
    """The Envoy container of the sidecar overlay's pod, and its bootstrap as mounted."""
    pod = gateway_pod(rendered)
    envoy = next(c for c in containers(pod.spec) if c["name"] == "envoy")
    args = envoy["args"]
    path = PurePosixPath(args[args.index("-c") + 1])
    mount = next(m for m in envoy["volumeMounts"] if path.parent == PurePosixPath(m["mountPath"]))
    files = volume_files(rendered, volume(pod, mount["name"]), namespace_of(pod.workload), {})
    bootstrap: dict[str, Any] = yaml.safe_load(files[path.name][0])
    return envoy, bootstrap


def test_the_sidecar_envoy_bootstrap_passes_envoy_validate(tmp_path: Path) -> None:
    _, bootstrap = sidecar_envoy(render("sidecar"))
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(bootstrap))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_sidecar_envoy_asks_the_gateway_as_gateway_uds_yaml_does() -> None:
    """Same filters (header stripping, ext_authz with status_on_error 503, whole bodies as
    bytes) and the same gateway cluster as deploy/envoy/gateway-uds.yaml."""
    _, bootstrap = sidecar_envoy(render("sidecar"))
    reference = yaml.safe_load((ENVOY_DIR / "gateway-uds.yaml").read_text())

    def manager(document: dict[str, Any]) -> dict[str, Any]:
        chain = document["static_resources"]["listeners"][0]["filter_chains"][0]
        config: dict[str, Any] = chain["filters"][0]["typed_config"]
        return config

    def gateway_cluster(document: dict[str, Any]) -> dict[str, Any]:
        clusters = document["static_resources"]["clusters"]
        cluster: dict[str, Any] = next(c for c in clusters if c["name"] == "wimse_authz")
        return cluster

    assert manager(bootstrap)["http_filters"] == manager(reference)["http_filters"]
    assert gateway_cluster(bootstrap) == gateway_cluster(reference)


def test_only_the_gateway_and_envoy_share_the_socket_directory() -> None:
    rendered = render("sidecar")
    pod = gateway_pod(rendered)
    envoy, bootstrap = sidecar_envoy(rendered)
    listeners = gateway_config(rendered)["server"]["listeners"]
    [inbound] = [item for item in listeners if item.get("mode", "inbound") == "inbound"]
    [outbound] = [item for item in listeners if item.get("mode") == "outbound"]
    clusters = bootstrap["static_resources"]["clusters"]
    for listener, cluster_name, mounted_at in (
        (inbound, "wimse_authz", 0),
        (outbound, "wimse_authz_egress", 1),  # egress/ is the gateway's, in the mount
    ):
        socket = PurePosixPath(listener["address"].removeprefix("unix:"))
        cluster = next(c for c in clusters if c["name"] == cluster_name)
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["pipe"]["path"] == str(socket)
        sharing = {
            container["name"]
            for container in containers(pod.spec)
            for mount in container.get("volumeMounts", [])
            if mount["mountPath"] == str(socket.parents[mounted_at])
        }
        assert sharing == {"wimse-authz", "envoy"}
    # The socket is created with the process's umask: Envoy connects as the same user.
    assert envoy["securityContext"]["runAsUser"] == pod.container["securityContext"]["runAsUser"]
    assert pod.container.get("restartPolicy") == "Always", "a sidecar: up before Envoy"
    services = {s["metadata"]["name"] for s in find(rendered, "Service")}
    assert "wimse-authz" not in services
    assert not find(rendered, "HorizontalPodAutoscaler")


def test_the_sidecar_envoy_names_a_configured_service() -> None:
    """Its ingress routes name protected services; its egress routes, callees."""
    rendered = render("sidecar")
    _, bootstrap = sidecar_envoy(rendered)
    config = gateway_config(rendered)
    listeners = {item["name"]: item for item in bootstrap["static_resources"]["listeners"]}
    for listener, configured in (
        ("ingress", config["services"]),
        ("egress", config["outbound"]["callees"]),
    ):
        named = set(re.findall(r'"wimse\.service": "([^"]+)"', json.dumps(listeners[listener])))
        assert named
        assert named <= set(configured)


def test_only_the_sidecar_deployment_has_outbound_listeners() -> None:
    """A shared (multi-tenant) gateway never mints: only a workload's own sidecar speaks for
    that workload, on a socket its Envoy alone reaches."""
    for name in KUSTOMIZATIONS:
        config = gateway_config(render(name))
        outbound = [
            item for item in config["server"]["listeners"] if item.get("mode") == "outbound"
        ]
        if name == "sidecar":
            assert [item["workload"] for item in outbound] == ["orders"]
            assert list(config["outbound"]["workloads"]) == ["orders"]
        else:
            assert outbound == [], name
            assert "outbound" not in config, name


def test_the_sidecar_egress_routes_send_each_proof_to_its_callee(tmp_path: Path) -> None:
    rendered = render("sidecar")
    _, bootstrap = sidecar_envoy(rendered)
    config = parse_config(gateway_config(rendered), "sidecar gateway.yaml", tmp_path)
    assert egress_envoy_problems(config, bootstrap) == []


# The istio overlay


def mesh_provider() -> dict[str, Any]:
    operator = yaml.safe_load((ISTIO_DIR / "mesh-config/istio-operator.yaml").read_text())
    [provider] = operator["spec"]["meshConfig"]["extensionProviders"]
    return dict(provider)


def test_the_custom_authorization_policy_names_the_extension_provider() -> None:
    custom = [
        p for p in find(render("istio"), "AuthorizationPolicy") if p["spec"]["action"] == "CUSTOM"
    ]
    assert custom
    for policy in custom:
        assert policy["spec"]["provider"]["name"] == mesh_provider()["name"]


def test_the_extension_provider_reaches_the_gateway_service_and_fails_closed() -> None:
    rendered = render("istio")
    grpc = mesh_provider()["envoyExtAuthzGrpc"]
    service = one(rendered, "Service", "wimse-authz")
    assert grpc["service"] == f"wimse-authz.{namespace_of(service)}.svc.cluster.local"
    assert grpc["port"] == service["spec"]["ports"][0]["port"]
    assert grpc["failOpen"] is False
    assert grpc["statusOnError"] == "503"
    assert grpc["includeRequestBodyInCheck"]["packAsBytes"] is True
    assert grpc["includeRequestBodyInCheck"]["allowPartialMessage"] is False


def test_under_istio_the_sidecar_forwards_to_the_loopback_listener() -> None:
    rendered = render("istio")
    [listener] = gateway_config(rendered)["server"]["listeners"]
    sidecar = one(rendered, "Sidecar")
    [ingress] = sidecar["spec"]["ingress"]
    assert ingress["defaultEndpoint"] == listener["address"]
    assert listener["address"].startswith("127.0.0.1:")
    service = one(rendered, "Service", "wimse-authz")
    assert ingress["port"]["number"] == service["spec"]["ports"][0]["port"]
    peer = one(rendered, "PeerAuthentication")
    assert peer["spec"]["mtls"]["mode"] == "STRICT"
    assert namespace_of(peer) == namespace_of(service)


def test_under_istio_diagnostics_bypass_the_sidecar() -> None:
    rendered = render("istio")
    pod = gateway_pod(rendered)
    excluded = pod.template["metadata"]["annotations"][
        "traffic.sidecar.istio.io/excludeInboundPorts"
    ]
    diagnostics = port_of(gateway_config(rendered)["diagnostics"]["address"])
    assert str(diagnostics) in excluded.split(",")
    namespace = one(rendered, "Namespace")
    assert namespace["metadata"]["labels"]["istio-injection"] == "enabled"


def test_under_istio_the_service_is_chosen_by_the_destination_principal() -> None:
    """No per-route context extensions exist under Istio (docs/design modes.md)."""
    config = gateway_config(render("istio"))
    assert config[SERVICE_SELECTION_KEY] == "destination_principal"
    assert "default_service" not in config
    for service in config["services"].values():
        assert service["id"].startswith("spiffe://cluster.local/ns/")


def test_under_istio_signatures_are_accepted_only_where_the_provider_forwards_whole_bodies() -> (
    None
):
    """A service that accepts HTTP signatures declares its bodies forwarded, which holds
    only while the extension provider sends every body whole and as bytes."""
    config = gateway_config(render("istio"))
    signing = [s for s in config["services"].values() if "http_signature" in s.get("proofs", [])]
    assert signing
    for service in signing:
        assert service.get("body") == "forwarded"
    body = mesh_provider()["envoyExtAuthzGrpc"]["includeRequestBodyInCheck"]
    assert (body["packAsBytes"], body["allowPartialMessage"]) == (True, False)


# The envoy-gateway overlay


def test_the_security_policy_asks_the_gateway_and_fails_closed() -> None:
    rendered = render("envoy-gateway")
    policy = one(rendered, "SecurityPolicy")
    ext_auth = policy["spec"]["extAuth"]
    [backend] = ext_auth["grpc"]["backendRefs"]
    service = one(rendered, "Service", backend["name"])
    assert backend["namespace"] == namespace_of(service)
    assert backend["port"] == service["spec"]["ports"][0]["port"]
    assert ext_auth["failOpen"] is False
    assert ext_auth["statusOnError"] == 503
    extensions = {e["name"]: e["value"] for e in ext_auth["contextExtensions"]}
    assert extensions["wimse.service"] in gateway_config(rendered)["services"]
    assert "wimse.body" not in extensions, "Envoy Gateway sends bodies as text, not bytes"
    [target] = policy["spec"]["targetRefs"]
    assert one(rendered, target["kind"], target["name"])
    grant = one(rendered, "ReferenceGrant")
    assert namespace_of(grant) == namespace_of(service)
    assert grant["spec"]["from"] == [
        {
            "group": "gateway.envoyproxy.io",
            "kind": "SecurityPolicy",
            "namespace": namespace_of(policy),
        }
    ]
    tls = one(rendered, "BackendTLSPolicy")
    assert tls["spec"]["targetRefs"][0]["name"] == service["metadata"]["name"]
    assert tls["spec"]["validation"]["hostname"] == (
        f"{service['metadata']['name']}.{namespace_of(service)}.svc"
    )


def test_the_validation_schemas_know_the_envoy_gateway_fields_used() -> None:
    """Schemas with the field left out would pass anything; these name it."""
    schema = json.loads(
        (SCHEMA_DIR / "gateway.envoyproxy.io/v1alpha1/SecurityPolicy.json").read_text()
    )
    ext_auth = schema["properties"]["spec"]["properties"]["extAuth"]["properties"]
    assert {"grpc", "failOpen", "statusOnError", "contextExtensions", "timeout"} <= set(ext_auth)

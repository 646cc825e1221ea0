"""OPA bundles: archive layout and refusals, manifest and roots, signatures as OPA signs them.

Bundles are built with `authz.devtools.bundle` (as `opa build --signing-key` builds them) or,
for archives no honest builder would make, assembled member by member with `tarfile`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import RSAAlgorithm

from authz.config import BundleSigningConfig, KeySetConfig
from authz.devtools.bundle import build_bundle, sign_bundle_files, tar_gz
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import encode_jws, sign_jws
from authz.errors import ConfigError
from authz.policy.bundle import Bundle, BundleError, BundleVerifier, parse_bundle
from authz.policy.bundle_digest import file_digest, signed_bytes
from authz.policy.loader import load_policy_set

MAX = 1 << 20
POLICY = "package envoy.authz\n\nallow if input.ok\n"
POLICY_TEST = "package envoy.authz_test\n\ntest_allow if data.envoy.authz.allow with input as {}\n"


@pytest.fixture(scope="module")
def key() -> dict[str, Any]:
    return generate_private_jwk("ES256", kid="signer-1")


def write_tree(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def policy_dir(tmp_path: Path, extra: dict[str, str] | None = None) -> Path:
    files = {
        "envoy/authz.rego": POLICY,
        "envoy/authz_test.rego": POLICY_TEST,
        "data.json": json.dumps({"limits": {"max": 3}}),
        "acl/teams/data.yaml": "owners: [alice]\n",
    }
    return write_tree(tmp_path / "policy", {**files, **(extra or {})})


def verifier_for(
    jwk: dict[str, Any],
    keyid: str = "signer-1",
    algorithms: tuple[str, ...] = ("ES256",),
    **signing: Any,
) -> BundleVerifier:
    keys = {keyid: KeySetConfig(algorithms=list(algorithms), jwks={"keys": [public_jwk(jwk)]})}
    return BundleVerifier.from_config(BundleSigningConfig(keys=keys, **signing))


def parse(data: bytes, verifier: BundleVerifier | None = None, max_bytes: int = MAX) -> Bundle:
    return parse_bundle(data, "bundle test.tar.gz", max_bytes=max_bytes, verifier=verifier)


def refused(data: bytes, verifier: BundleVerifier | None = None, max_bytes: int = MAX) -> str:
    with pytest.raises(BundleError) as caught:
        parse(data, verifier, max_bytes)
    message = str(caught.value)
    assert message.startswith("bundle test.tar.gz")
    return message


def members(data: bytes) -> dict[str, bytes]:
    """A built bundle's files by path (without the leading `/` OPA writes)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {
            member.name.lstrip("/"): archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive
        }


def raw_tar(*entries: tuple[str, bytes] | tarfile.TarInfo) -> bytes:
    """A gzipped tar with exactly these members: (name, content) files or prepared headers."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                archive.addfile(entry)
            else:
                name, content = entry
                info = tarfile.TarInfo(name)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return gzip.compress(buffer.getvalue())


def special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def resigned(files: dict[str, bytes], jwk: dict[str, Any], **claims: Any) -> bytes:
    """`files` (without signatures) re-signed, then packed."""
    token = sign_bundle_files(files, jwk, **claims)
    return tar_gz({**files, ".signatures.json": json.dumps({"signatures": [token]}).encode()})


def with_token(files: dict[str, bytes], token: str) -> bytes:
    body = json.dumps({"signatures": [token]}).encode()
    return tar_gz({**files, ".signatures.json": body})


def file_list(files: dict[str, bytes]) -> list[dict[str, str]]:
    return [
        {"name": path, "hash": file_digest(path, content).hex(), "algorithm": "SHA-256"}
        for path, content in sorted(files.items())
    ]


# --- layout ---------------------------------------------------------------------------------


def test_modules_tests_and_data_are_placed_as_in_a_policy_directory(tmp_path: Path) -> None:
    bundle = parse(build_bundle(policy_dir(tmp_path), revision="rev-7"))
    policy_set = bundle.policy_set
    assert [path for path, _ in policy_set.modules] == ["envoy/authz.rego"]
    assert [path for path, _ in policy_set.tests] == ["envoy/authz_test.rego"]
    assert policy_set.data == {"limits": {"max": 3}, "acl": {"teams": {"owners": ["alice"]}}}
    assert bundle.revision == policy_set.revision == "rev-7"
    assert bundle.roots == ("",)
    assert not bundle.signed
    assert bundle.keyid is None
    assert policy_set.origin == "bundle test.tar.gz"


def test_empty_revision_is_the_digest_a_directory_of_the_same_files_gets(tmp_path: Path) -> None:
    directory = policy_dir(tmp_path)
    bundle = parse(build_bundle(directory, revision=""))
    assert bundle.revision == load_policy_set(directory).revision
    assert len(bundle.revision) == 16


def test_manifest_metadata_is_exposed() -> None:
    manifest = {"revision": "r", "metadata": {"team": "payments", "build": 12}}
    data = raw_tar((".manifest", json.dumps(manifest).encode()), ("a.rego", b"package a\n"))
    assert dict(parse(data).metadata) == {"team": "payments", "build": 12}


@pytest.mark.parametrize("prefix", ["/", "./", ""])
def test_member_paths_may_start_with_slash_or_dot_slash(prefix: str) -> None:
    data = raw_tar(
        (f"{prefix}x/policy.rego", b"package x\n"),
        (f"{prefix}x/data.json", b'{"a": 1}'),
        tarfile.TarInfo(f"{prefix}x"),  # a directory entry, ignored
    )
    bundle = parse(data)
    assert [path for path, _ in bundle.policy_set.modules] == ["x/policy.rego"]
    assert bundle.policy_set.data == {"x": {"a": 1}}


def test_files_that_are_neither_rego_nor_data_are_ignored() -> None:
    data = raw_tar(("a.rego", b"package a\n"), ("README.md", b"# docs"), ("x/notes.txt", b"n"))
    assert [path for path, _ in parse(data).policy_set.modules] == ["a.rego"]


# --- archive refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../evil.rego", "a/../../evil.rego", "a/./b.rego", "a//b.rego", "a\\b.rego", "/", "./"],
)
def test_traversal_and_malformed_paths_are_refused(name: str) -> None:
    data = raw_tar(("a.rego", b"package a\n"), (name, b"package evil\n"))
    assert "invalid path" in refused(data)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (special("link.rego", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
        (special("hard.rego", tarfile.LNKTYPE, "a.rego"), "is a link"),
        (special("dev", tarfile.CHRTYPE), "not a regular file"),
        (special("blk", tarfile.BLKTYPE), "not a regular file"),
        (special("fifo", tarfile.FIFOTYPE), "not a regular file"),
    ],
)
def test_links_and_devices_are_refused(entry: tarfile.TarInfo, message: str) -> None:
    assert message in refused(raw_tar(("a.rego", b"package a\n"), entry))


def test_the_same_path_twice_is_refused_even_when_spelled_differently() -> None:
    data = raw_tar(("a.rego", b"package a\n"), ("./a.rego", b"package b\n"))
    assert "a.rego appears twice" in refused(data)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("policy.wasm", "WebAssembly"),
        ("x/other.wasm", "WebAssembly"),
        ("plan.json", "plan.json"),
        ("patch.json", "delta bundles"),
        ("x/.manifest", "manifest or signatures"),
        ("x/signatures.json", "manifest or signatures"),
        ("my.manifest", "manifest or signatures"),
    ],
)
def test_files_this_gateway_cannot_serve_as_opa_would_are_refused(name: str, message: str) -> None:
    assert message in refused(raw_tar(("a.rego", b"package a\n"), (name, b"{}")))


def test_compressed_bundle_over_max_bytes_is_refused(tmp_path: Path) -> None:
    data = build_bundle(policy_dir(tmp_path), revision="r")
    assert f"bundle is {len(data)} bytes, over the {len(data) - 1} limit" in refused(
        data, max_bytes=len(data) - 1
    )


def test_uncompressed_bundle_over_max_bytes_is_refused() -> None:
    data = raw_tar(("a.rego", b"package a\n"), ("big.txt", b"x" * 200_000))
    assert len(data) < 100_000
    assert "uncompressed bundle exceeds 100000 bytes" in refused(data, max_bytes=100_000)


def test_gzip_bomb_stops_at_the_limit_quickly() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(compressor.compress(zeros) for _ in range(256)) + compressor.flush()
    assert len(bomb) < 300_000  # 256 MiB of zeros
    started = time.monotonic()
    assert "uncompressed bundle exceeds" in refused(bomb, max_bytes=2 * MAX)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04 a zip file", "not a gzip archive"),
        (b"", "not a gzip archive"),
        (gzip.compress(b"not a tar archive at all" * 40), "not a valid tar archive"),
    ],
)
def test_bytes_that_are_not_a_tar_gz_are_refused(data: bytes, message: str) -> None:
    assert message in refused(data)


def test_truncated_gzip_is_refused() -> None:
    data = raw_tar(("a.rego", b"package a\n" * 1000))
    assert "truncated" in refused(data[: len(data) // 2])


def test_trailing_garbage_after_the_gzip_stream_is_refused() -> None:
    data = raw_tar(("a.rego", b"package a\n")) + b"garbage"
    assert "corrupt gzip data" in refused(data)


def test_concatenated_gzip_members_are_one_stream() -> None:
    single = gzip.decompress(raw_tar(("a.rego", b"package a\n")))
    half = len(single) // 2
    data = gzip.compress(single[:half]) + gzip.compress(single[half:])
    assert [path for path, _ in parse(data).policy_set.modules] == ["a.rego"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (("a.rego", b"package a\n\xff\xfe"), "a.rego: not UTF-8"),
        (("data.json", b'{"x": NaN}'), "data.json: not valid JSON"),
        (("data.json", b"[1, 2]"), "must hold a JSON object"),
    ],
)
def test_unreadable_module_or_data_is_refused(entry: tuple[str, bytes], message: str) -> None:
    assert message in refused(raw_tar(("b.rego", b"package b\n"), entry))


def test_bundle_without_modules_is_refused() -> None:
    assert "holds no .rego modules" in refused(raw_tar(("data.json", b"{}")))


# --- manifest and roots -----------------------------------------------------------------------


def manifest_bundle(manifest: object, *files: tuple[str, bytes]) -> bytes:
    return raw_tar((".manifest", json.dumps(manifest).encode()), *files)


def test_modules_and_data_under_the_roots_are_accepted() -> None:
    data = manifest_bundle(
        {"revision": "r", "roots": ["envoy/authz", "acl"]},
        ("envoy/authz/policy.rego", b"package envoy.authz.rules\n"),
        ("envoy/authz/policy_test.rego", b"package envoy.authz\n"),
        ("acl/teams/data.json", b'{"owners": ["alice"]}'),
        ("envoy/data.json", b'{"authz": {"limits": 1}}'),
    )
    bundle = parse(data)
    assert bundle.roots == ("envoy/authz", "acl")
    assert bundle.policy_set.data["envoy"] == {"authz": {"limits": 1}}


def test_roots_are_normalised_without_slashes() -> None:
    data = manifest_bundle({"roots": ["/a/", "b"]}, ("a.rego", b"package a\n"))
    assert parse(data).roots == ("a", "b")


def test_bracketed_package_segments_are_compared_as_written() -> None:
    data = manifest_bundle({"roots": ["x/b.c"]}, ("a.rego", b'package x["b.c"]\n'))
    assert parse(data).roots == ("x/b.c",)


@pytest.mark.parametrize(
    ("manifest", "files", "message"),
    [
        ({"roots": ["a"]}, [("b.rego", b"package b\n")], "package b lies outside"),
        ({"roots": ["a/b"]}, [("a.rego", b"package a\n")], "package a lies outside"),
        ({"roots": ["a"]}, [("t_test.rego", b"package t_test\n")], "package t_test lies outside"),
        (
            {"roots": ["a"]},
            [("a.rego", b"package a\n"), ("data.json", b'{"b": 1}')],
            "data at /b lies outside",
        ),
        (
            {"roots": ["a/x"]},
            [("a/x.rego", b"package a.x\n"), ("a/data.json", b'{"y": 1}')],
            "data at /a/y lies outside",
        ),
        ({"roots": ["a", "a/b"]}, [("a.rego", b"package a\n")], "overlap"),
        ({"roots": []}, [("a.rego", b"package a\n")], "package a lies outside"),
        ({"roots": "a"}, [("a.rego", b"package a\n")], "'roots' is not a list"),
        ({"revision": 7}, [("a.rego", b"package a\n")], "'revision' is not a string"),
        ({"metadata": [1]}, [("a.rego", b"package a\n")], "'metadata' is not an object"),
        ({"rego_version": 0}, [("a.rego", b"package a\n")], "Rego v0 is not supported"),
        (
            {"file_rego_versions": {"old/*.rego": 0}},
            [("a.rego", b"package a\n")],
            "Rego v0 is not supported",
        ),
        ({"rego_version": 2}, [("a.rego", b"package a\n")], "not a known Rego version"),
        (
            {"wasm": [{"entrypoint": "a/allow", "module": "/policy.wasm"}]},
            [("a.rego", b"package a\n")],
            "WebAssembly",
        ),
    ],
)
def test_manifest_violations_are_refused(
    manifest: dict[str, Any], files: list[tuple[str, bytes]], message: str
) -> None:
    assert message in refused(manifest_bundle(manifest, *files))


def test_rego_version_1_is_accepted() -> None:
    data = manifest_bundle({"rego_version": 1}, ("a.rego", b"package a\n"))
    assert parse(data).revision


@pytest.mark.parametrize("manifest", [b"[1]", b"{bad", b'{"revision": "a", "revision": "b"}'])
def test_manifest_that_is_not_one_json_object_is_refused(manifest: bytes) -> None:
    data = raw_tar((".manifest", manifest), ("a.rego", b"package a\n"))
    assert ".manifest: not a JSON object" in refused(data)


def test_module_that_does_not_parse_is_named_when_roots_are_checked() -> None:
    data = manifest_bundle({"roots": ["a"]}, ("a.rego", b"package a\nallow if {\n"))
    assert "a.rego" in refused(data)


# --- signatures ------------------------------------------------------------------------------


def signed_files(tmp_path: Path, jwk: dict[str, Any], **options: Any) -> dict[str, bytes]:
    return members(build_bundle(policy_dir(tmp_path), revision="r1", signing_key=jwk, **options))


def test_signed_bundle_verifies_and_names_its_key(tmp_path: Path, key: dict[str, Any]) -> None:
    data = build_bundle(policy_dir(tmp_path), revision="r1", signing_key=key)
    bundle = parse(data, verifier_for(key))
    assert bundle.signed
    assert bundle.keyid == "signer-1"
    assert bundle.revision == "r1"


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES384", "EdDSA"])
def test_every_asymmetric_algorithm_signs_bundles(tmp_path: Path, alg: str) -> None:
    jwk = generate_private_jwk(alg, kid="k")
    data = build_bundle(policy_dir(tmp_path), revision="r", signing_key=jwk)
    assert parse(data, verifier_for(jwk, keyid="k", algorithms=(alg,))).signed


def test_unsigned_bundle_is_refused_when_signing_is_configured(
    tmp_path: Path, key: dict[str, Any]
) -> None:
    data = build_bundle(policy_dir(tmp_path), revision="r1")
    assert "the bundle is not signed" in refused(data, verifier_for(key))


def test_signed_bundle_is_refused_when_no_signing_keys_are_configured(
    tmp_path: Path, key: dict[str, Any]
) -> None:
    data = build_bundle(policy_dir(tmp_path), revision="r1", signing_key=key)
    assert "no bundle signing keys are configured" in refused(data)


def test_tampered_module_is_refused(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    files["envoy/authz.rego"] = POLICY.replace("input.ok", "true").encode()
    message = refused(tar_gz(files), verifier_for(key))
    assert "envoy/authz.rego: content does not match the signed SHA-256 digest" in message


def test_tampered_data_value_is_refused(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    files["data.json"] = json.dumps({"limits": {"max": 3000}}).encode()
    assert "data.json: content does not match" in refused(tar_gz(files), verifier_for(key))


def test_reformatted_json_keeps_its_signature_as_in_opa(
    tmp_path: Path, key: dict[str, Any]
) -> None:
    files = signed_files(tmp_path, key)
    files["data.json"] = b'{\n  "limits" : { "max" : 3 }\n}\n'
    files[".manifest"] = b'{ "revision": "r1" }'
    assert parse(tar_gz(files), verifier_for(key)).policy_set.data["limits"] == {"max": 3}


def test_file_the_signature_does_not_list_is_refused(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    files["extra/policy.rego"] = b"package extra\n"
    message = refused(tar_gz(files), verifier_for(key))
    assert "extra/policy.rego: not covered by the bundle signature" in message


def test_ignored_file_must_still_be_signed(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    files["README.md"] = b"unsigned notes"
    assert "README.md: not covered" in refused(tar_gz(files), verifier_for(key))


def test_listed_file_missing_from_the_bundle_is_refused(
    tmp_path: Path, key: dict[str, Any]
) -> None:
    files = signed_files(tmp_path, key)
    del files["acl/teams/data.yaml"]
    message = refused(tar_gz(files), verifier_for(key))
    assert ".signatures.json: lists files the bundle lacks: acl/teams/data.yaml" in message


def test_signature_by_another_key_is_refused(tmp_path: Path, key: dict[str, Any]) -> None:
    other = generate_private_jwk("ES256", kid="signer-1")
    data = build_bundle(policy_dir(tmp_path), revision="r1", signing_key=other)
    message = refused(data, verifier_for(key))
    assert "key 'signer-1': signature does not verify" in message


def test_algorithm_off_the_keys_allow_list_is_refused(tmp_path: Path) -> None:
    rsa = generate_private_jwk("RS256", kid="k")
    data = build_bundle(policy_dir(tmp_path), revision="r1", signing_key=rsa)
    rsa_public = {k: v for k, v in rsa.items() if k != "alg"}
    message = refused(data, verifier_for(rsa_public, keyid="k", algorithms=("PS256",)))
    assert "alg 'RS256' is not allowed" in message


def test_unknown_key_id_is_refused(tmp_path: Path, key: dict[str, Any]) -> None:
    data = build_bundle(policy_dir(tmp_path), revision="r1", signing_key=key, keyid="rotated")
    assert "key id 'rotated' is not configured" in refused(data, verifier_for(key))


def test_kid_header_alone_selects_the_key(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    del files[".signatures.json"]
    token = sign_jws({"files": file_list(files)}, key, {"kid": "signer-1"})
    assert parse(with_token(files, token), verifier_for(key)).keyid == "signer-1"


def test_keyid_claim_alone_selects_the_key(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    del files[".signatures.json"]
    token = sign_jws({"files": file_list(files), "keyid": "signer-1"}, key, {})
    assert parse(with_token(files, token), verifier_for(key)).keyid == "signer-1"


def test_kid_and_keyid_that_disagree_are_refused(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    del files[".signatures.json"]
    claims = {"files": file_list(files), "keyid": "signer-1"}
    token = sign_jws(claims, key, {"kid": "signer-2"})
    assert "differ" in refused(with_token(files, token), verifier_for(key))


def test_signature_naming_no_key_is_refused(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    del files[".signatures.json"]
    token = sign_jws({"files": file_list(files)}, key, {})
    assert "names no key" in refused(with_token(files, token), verifier_for(key))


def test_matching_scope_is_accepted(tmp_path: Path, key: dict[str, Any]) -> None:
    data = build_bundle(policy_dir(tmp_path), revision="r", signing_key=key, scope="prod")
    assert parse(data, verifier_for(key, scope="prod")).signed


@pytest.mark.parametrize(
    ("signed_scope", "configured"), [("staging", "prod"), (None, "prod"), ("prod", None)]
)
def test_scope_must_equal_the_configured_scope(
    tmp_path: Path, key: dict[str, Any], signed_scope: str | None, configured: str | None
) -> None:
    data = build_bundle(policy_dir(tmp_path), revision="r", signing_key=key, scope=signed_scope)
    assert "scope" in refused(data, verifier_for(key, scope=configured))


def test_excluded_files_need_no_signature(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    files["README.md"] = b"notes"
    files["docs/extra.rego"] = b"package docs\n"
    verifier = verifier_for(key, exclude_files=["*.md", "docs/*"])
    bundle = parse(tar_gz(files), verifier)
    assert "docs/extra.rego" in dict(bundle.policy_set.modules)


def test_exclude_star_does_not_cross_directories(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    files["docs/README.md"] = b"notes"
    verifier = verifier_for(key, exclude_files=["*.md"])
    assert "docs/README.md: not covered" in refused(tar_gz(files), verifier)


def test_excluded_file_may_still_be_listed(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    files["data.json"] = b'{"limits": {"max": 4}}'
    assert parse(tar_gz(files), verifier_for(key, exclude_files=["data.json"])).signed


@pytest.mark.parametrize("member", ["jwk", "jku", "x5u", "x5c"])
def test_key_carried_in_the_jws_header_is_refused(
    tmp_path: Path, key: dict[str, Any], member: str
) -> None:
    files = signed_files(tmp_path, key)
    del files[".signatures.json"]
    attacker = generate_private_jwk("ES256", kid="signer-1")
    value: object = public_jwk(attacker) if member == "jwk" else "https://attacker.example/k"
    token = sign_jws({"files": file_list(files)}, attacker, {"kid": "signer-1", member: value})
    message = refused(with_token(files, token), verifier_for(key))
    assert f"carries '{member}'" in message


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"signatures": []}, "holds 0 signatures"),
        ({}, "holds 0 signatures"),
        ({"signatures": ["a.b.c", "d.e.f"]}, "holds 2 signatures"),
        ({"signatures": [7]}, "not a string"),
        ({"signatures": "a.b.c"}, "not a list"),
        ({"signatures": ["a.b.c"], "plugin": "custom"}, "plugins are not supported"),
        ({"signatures": ["not-a-jws"]}, "compact JWS needs 3 segments"),
    ],
)
def test_malformed_signatures_file_is_refused(
    tmp_path: Path, key: dict[str, Any], document: dict[str, Any], message: str
) -> None:
    files = signed_files(tmp_path, key)
    files[".signatures.json"] = json.dumps(document).encode()
    assert message in refused(tar_gz(files), verifier_for(key))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"algorithm": "MD5"}, "MD5 is too weak"),
        ({"algorithm": "SHA-1"}, "SHA-1 is too weak"),
        ({"algorithm": "sha256"}, "unsupported hash algorithm 'sha256'"),
        ({"algorithm": None}, "no hash algorithm given"),
        ({"hash": "zz"}, "'hash' is not a hex digest"),
        ({"name": "../x.rego"}, "invalid path"),
    ],
)
def test_malformed_file_entries_are_refused(
    tmp_path: Path, key: dict[str, Any], entry: dict[str, Any], message: str
) -> None:
    files = signed_files(tmp_path, key)
    del files[".signatures.json"]
    listed = file_list(files)
    listed[0] = {**listed[0], **entry}
    token = sign_jws({"files": listed, "keyid": "signer-1"}, key, {"kid": "signer-1"})
    assert message in refused(with_token(files, token), verifier_for(key))


def test_file_listed_twice_is_refused(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    del files[".signatures.json"]
    listed = file_list(files)
    token = sign_jws({"files": [*listed, listed[0]]}, key, {"kid": "signer-1"})
    assert "is listed twice" in refused(with_token(files, token), verifier_for(key))


def test_stronger_file_hash_algorithms_are_accepted(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    del files[".signatures.json"]
    listed = [
        {"name": path, "hash": file_digest(path, content, "SHA-512").hex(), "algorithm": "SHA-512"}
        for path, content in files.items()
    ]
    token = sign_jws({"files": listed}, key, {"kid": "signer-1"})
    assert parse(with_token(files, token), verifier_for(key)).signed


def test_errors_never_carry_the_signature(tmp_path: Path, key: dict[str, Any]) -> None:
    files = signed_files(tmp_path, key)
    token = json.loads(files[".signatures.json"])["signatures"][0]
    files["envoy/authz.rego"] = b"package envoy.authz\nallow := true\n"
    other = verifier_for(generate_private_jwk("ES256"))
    for verifier in (verifier_for(key), other):
        message = refused(tar_gz(files), verifier)
        assert all(part not in message for part in token.split("."))


def test_signing_key_that_is_not_a_public_key_is_a_config_error(key: dict[str, Any]) -> None:
    keys = {"k": KeySetConfig(algorithms=["ES256"], jwks={"keys": [key]})}
    with pytest.raises(ConfigError, match="private"):
        BundleVerifier.from_config(BundleSigningConfig(keys=keys))


@pytest.mark.parametrize("pattern", ["[", "a[", "[]a]", "x\\", "[a-]"])
def test_malformed_exclude_pattern_is_a_config_error(key: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match="exclude_files"):
        verifier_for(key, exclude_files=[pattern])


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        # OPA's own TestIsFileExcluded cases (v1/bundle/bundle_test.go).
        ("data.json", "data.json", True),
        (".*", ".manifest", True),
        (".*", "data.json", False),
        ("/a/b/*", "/a/b/data.json", True),
        ("/a/b/*", "/a/b/c/data.json", False),
        # Go filepath.Match semantics beyond them.
        ("a/?.rego", "a/x.rego", True),
        ("a/?.rego", "a//.rego", False),
        ("[^d]*.json", "data.json", False),
        ("[a-c]*", "b.rego", True),
        ("\\*.rego", "*.rego", True),
        ("\\*.rego", "a.rego", False),
    ],
)
def test_exclude_patterns_match_as_go_filepath_match(
    key: dict[str, Any], pattern: str, path: str, matches: bool
) -> None:
    assert verifier_for(key, exclude_files=[pattern]).is_excluded(path) is matches


# --- compatibility with OPA --------------------------------------------------------------------

# v1/bundle/bundle_test.go TestVerifyBundleFileHash: files and the digests OPA computes for them
# (MD5 and SHA-512 alternately). Structured files hash their normal form, others their bytes.
OPA_DIGESTS = [
    ("/.manifest", b'{"revision": "quickbrownfaux"}', "md5", "a005c38a509dc2d5a7407b9494efb2ad"),
    (
        "/a/b/c/data.json",
        b"[1,2,3]",
        "sha512",
        "60f7b5dc86ded48785436192a08dbfd04894d7f1b417c4f8d3714679a7f78cb3"
        "c833f16a8559a1cf1f32968747dc1d95ef34826263dacf125ded8f5c374be4c0",
    ),
    ("/a/b/d/data.json", b"true", "md5", "b326b5062b2f0e69046810717534cb09"),
    (
        "/a/b/y/data.yaml",
        b"foo: 1",
        "sha512",
        "20f27a640a233e6524fe7d138898583cd43475724806feb26be7f214e1d10b29"
        "edf6a0d3cb08f82107a45686b61b8fdabab6406cf4e70efe134f42238dbd70ab",
    ),
    ("/example/example.rego", b"package example", "md5", "ceecc199d432a4eeae305914ea4816cb"),
    (
        "/policy.wasm",
        b"modules-compiled-as-wasm-binary",
        "sha512",
        "4f73765168fd8b5c294b739436da312cc5e979faf09f67bf576d36ea79a4f79c"
        "70cbb3c33d06ff65f531a9f42abd0a8f4daacc554cb521837e876dc28f56ce89",
    ),
    (
        "/data.json",
        b'{"x": {"y": true}, "a": {"b": {"z": true}}}',
        "md5",
        "36669864a622563256817033b1fc53db",
    ),
]


@pytest.mark.parametrize(("path", "content", "algorithm", "digest"), OPA_DIGESTS)
def test_file_digests_match_opas_published_vectors(
    path: str, content: bytes, algorithm: str, digest: str
) -> None:
    assert hashlib.new(algorithm, signed_bytes(path, content)).hexdigest() == digest


def test_sha256_digests_match_opas_signed_test_bundle() -> None:
    # v1/bundle/bundle_test.go TestReadWithSignaturesWithBaseDir lists these SHA-256 digests.
    assert file_digest(".manifest", b'{"revision": "quickbrownfaux"}').hex() == (
        "507a2c38a1441db58d2cb87982c42aa91a4342ef422a6b542eddebeef6f0412f"
    )
    assert file_digest("a/b/c/data.json", b"[1,2,3]").hex() == (
        "a615eeaee21de5179de080de8c3052c8da901138406ba71c38c032845f7d54f4"
    )
    assert file_digest("http/policy/policy.rego", b"package example").hex() == (
        "f664461e303b37c20c5e0be2900881678cdf8e860aa433a5a14d494ba3c66649"
    )


@pytest.mark.parametrize(
    ("content", "normal"),
    [
        (b'{"b": 1.50, "a": -0, "c": 1e5}', '{"a":-0,"b":1.50,"c":1e5}'),
        (
            b'["<&>", "\\u2028", "\\u0001\\b\\f\\t", "\\ud800"]',
            '["<&>","\\u2028","\\u0001\\b\\f\\t","\ufffd"]',
        ),
        (b'\xef\xbb\xbf{"\xc3\xa9": "\xc3\xa9"}', '{"\u00e9":"\u00e9"}'),
        (b"n: 1.0\nbig: 1.0e+21\nsmall: 1.5e-7\nlist: [yes, ~]\n", None),
    ],
)
def test_normal_form_follows_gos_json_encoding(content: bytes, normal: str | None) -> None:
    expected = normal or '{"big":1e+21,"list":[true,null],"n":1,"small":1.5e-7}'
    assert signed_bytes("data.json", content) == expected.encode()


def test_data_yml_is_hashed_as_raw_bytes_as_opa_does() -> None:
    assert signed_bytes("x/data.yml", b"a:  1\n") == b"a:  1\n"
    assert signed_bytes("x/data.yaml", b"a:  1\n") == b'{"a":1}'


# v1/bundle/verify_test.go TestVerifyJWTSignature: a JWT OPA's tests sign with RS256 (kid
# "foo", scope "write") and the public key that verifies it. Its payload lists two files with
# the hash algorithm "sha256" (lower case), which OPA itself does not accept either.
OPA_RS256_TOKEN = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImZvbyJ9.eyJmaWxlcyI6W3sibmFtZSI6ImRiL3VhbTIvZW"
    "50aXRsZW1lbnRzL2RhdGEuanNvbiIsImhhc2giOiJjMjEzMTU0NGM3MTZhMjVhNWUzMWY1MDQzMDBmNTI0MGU4MjM1"
    "Y2FkYjlhNTdmMGJkMWI2ZjRiZDc0YjI2NjEyIiwiYWxnb3JpdGhtIjoic2hhMjU2In0seyJuYW1lIjoiZGIvdWFtMi"
    "9wb2xpY3kvb3BhLXBvbGljeS5yZWdvIiwiaGFzaCI6IjQyY2ZlNjc2OGI1N2JiNWY3NTAzYzE2NWMyOGRkMDdhYzVi"
    "ODEzNTU0ZWJjODUwZjJjYzM1ODQzZTcxMzdiMWQifV0sImlhdCI6MTU5MjI1MTQwNiwiaXNzIjoiSldUU2VydmljZSI"
    "sInNjb3BlIjoid3JpdGUifQ.UZcX_Qj29o213nwZ5mysiyNcgAp1AOqCkDLkj1KGZ7Cw3l17TbkF8t3FJd654sf762N"
    "GcABA0WQ2zxq-labXl_d5TKQmq23lurO3qLHI1cKQPyoxPbddGo78sJpMwWsiMyEYcyyKC9FpNUpa8cT81GPo4q9Zui8"
    "TAD0wtHh2YxBL7E8QYLJxcLMJTJxVBgrQGLXFT7vYRc6hJz9Vu-i0SWuLBGxOCmYoHr4DWFfy0IhAbhiUFyLRpukfBP"
    "jCJNYY5LgaZdN6LaYivtIEUms5jUuXubBimLJm7KOT5-bgJMXTcUsbrbl2Ma7PwG5IOKjjgyEvH8KVfGFZSzNrpuxKmA"
)
OPA_RS256_PUBLIC_KEY = b"""-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA9KaakMv1XKKDaSch3PFR
3a27oaHp1GNTTNqvb1ZaHZXp+wuhYDwc/MTE67x9GCifvQBWzEGorgTq7aisiOyl
vKifwz6/wQ+62WHKG/sqKn2Xikp3P63aBIPlZcHbkyyRmL62yeyuzYoGvLEYel+m
z5SiKGBwviSY0Th2L4e5sGJuk2HOut6emxDi+E2Fuuj5zokFJvIT6Urlq8f3h6+l
GeR6HUOXqoYVf7ff126GP7dticTVBgibxkkuJFmpvQSW6xmxruT4k6iwjzbZHY7P
ypZ/TdlnuGC1cOpAVyU7k32IJ9CRbt3nwEf5U54LRXLLQjFixWZHwKdDiMTF4ws0
+wIDAQAB
-----END PUBLIC KEY-----
"""


def opa_test_verifier(scope: str = "write") -> BundleVerifier:
    public_key = load_pem_public_key(OPA_RS256_PUBLIC_KEY)
    assert isinstance(public_key, RSAPublicKey)
    jwk = json.loads(RSAAlgorithm.to_jwk(public_key))
    keys = {"foo": KeySetConfig(algorithms=["RS256"], jwks={"keys": [jwk]})}
    return BundleVerifier.from_config(BundleSigningConfig(keys=keys, scope=scope))


def test_jws_signed_by_opa_verifies_up_to_its_file_list() -> None:
    data = with_token({"a.rego": b"package a\n"}, OPA_RS256_TOKEN)
    # The signature and scope verified; the refusal is about the payload's file entries.
    assert "db/uam2/entitlements/data.json: unsupported hash algorithm 'sha256'" in refused(
        data, opa_test_verifier()
    )


def test_jws_signed_by_opa_with_one_bit_changed_is_refused() -> None:
    header, payload, signature = OPA_RS256_TOKEN.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 1
    forged = f"{header}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"
    data = with_token({"a.rego": b"package a\n"}, forged)
    assert "signature does not verify" in refused(data, opa_test_verifier())


def test_jws_signed_by_opa_is_refused_for_another_scope() -> None:
    data = with_token({"a.rego": b"package a\n"}, OPA_RS256_TOKEN)
    assert "scope 'write' does not match" in refused(data, opa_test_verifier(scope="read"))


# --- the builder -------------------------------------------------------------------------------


def test_builder_output_is_reproducible_and_named_as_opa_names_members(tmp_path: Path) -> None:
    directory = policy_dir(tmp_path, {"README.md": "left out"})
    first = build_bundle(directory, revision="r", roots=["envoy", "acl", "limits"])
    assert first == build_bundle(directory, revision="r", roots=["envoy", "acl", "limits"])
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as archive:
        names = archive.getnames()
    assert names == [
        "/.manifest",
        "/acl/teams/data.yaml",
        "/data.json",
        "/envoy/authz.rego",
        "/envoy/authz_test.rego",
    ]
    assert json.loads(members(first)[".manifest"]) == {
        "revision": "r",
        "roots": ["envoy", "acl", "limits"],
    }


def test_builder_signature_lists_every_file_with_opa_digests(
    tmp_path: Path, key: dict[str, Any]
) -> None:
    files = signed_files(tmp_path, key, scope="prod")
    token = json.loads(files.pop(".signatures.json"))["signatures"][0]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert header == {"alg": "ES256", "kid": "signer-1"}
    assert claims == {"files": file_list(files), "keyid": "signer-1", "scope": "prod"}


def test_builder_refuses_symlinks(tmp_path: Path) -> None:
    directory = policy_dir(tmp_path)
    (directory / "link.rego").symlink_to(directory / "envoy" / "authz.rego")
    with pytest.raises(ConfigError, match="symbolic link"):
        build_bundle(directory, revision="r")


def test_encoded_header_with_unsupported_crit_is_refused(
    tmp_path: Path, key: dict[str, Any]
) -> None:
    files = signed_files(tmp_path, key)
    del files[".signatures.json"]
    token = encode_jws(
        {"alg": "ES256", "kid": "signer-1", "crit": ["exp"]},
        {"files": file_list(files)},
        lambda data: b"x" * 64,
    )
    assert "'crit' is not supported" in refused(with_token(files, token), verifier_for(key))

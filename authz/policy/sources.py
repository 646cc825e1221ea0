"""Where a policy set comes from: a directory, a bundle file, or a bundle URL.

Directories and bundle files are read here, synchronously (they are local). A bundle URL is
fetched by the server's reloader, which polls it with `If-None-Match` and hands the bytes
to `policy_set_from_bundle`.
"""

from __future__ import annotations

from authz.config import BundleConfig, PolicyConfig
from authz.errors import ConfigError
from authz.policy.bundle import BundleVerifier, parse_bundle
from authz.policy.bundle_fetch import read_bundle_file
from authz.policy.loader import PolicySet, load_policy_set


def policy_set_from_bundle(data: bytes, bundle: BundleConfig, origin: str) -> PolicySet:
    """A bundle's policy set, its signature verified when signing is configured."""
    verifier = BundleVerifier.from_config(bundle.signing) if bundle.signing is not None else None
    return parse_bundle(data, origin, max_bytes=bundle.max_bytes, verifier=verifier).policy_set


def load_configured_policy_set(policy: PolicyConfig) -> PolicySet:
    """The set named by a directory or a bundle file."""
    if policy.directory is not None:
        return load_policy_set(policy.directory)
    bundle = policy.bundle
    if bundle is None:
        raise ConfigError("policy: set 'directory' or 'bundle'")
    if bundle.file is None:
        raise ConfigError(f"policy.bundle.url {bundle.url}: a URL bundle is fetched by the server")
    data = read_bundle_file(bundle.file, bundle.max_bytes)
    return policy_set_from_bundle(data, bundle, f"bundle {bundle.file}")

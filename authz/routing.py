"""Which protected service a request is for, chosen by Envoy route configuration.

A route names its service in the `wimse.service` context extension; routes that name none
use the configured default. The service fixes the target URIs a WPT `aud` may carry: its
configured origins plus the request's raw path. The `Host` header never takes part.
Whether a Txn-Token is required comes from the route's `wimse.txn_token` context extension
(`required` or `optional`), else the service's `txn_token`, else `txn_token.required`.
HTTP signatures are accepted only on routes that declare `wimse.body: forwarded`: there
Envoy forwards the exact body, which a signature's `Content-Digest` must be checked against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from authz.config import (
    BODY_CONTEXT_KEY,
    BODY_FORWARDED,
    DRY_RUN_CONTEXT_KEY,
    SERVICE_CONTEXT_KEY,
    TXN_TOKEN_CONTEXT_KEY,
    Config,
)
from authz.credentials.authenticator import ProofTarget
from authz.credentials.identifiers import WorkloadId
from authz.credentials.presentation import ProofStyle
from authz.errors import UnavailableError
from authz.reasons import Reason


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    name: str
    id: WorkloadId
    origins: tuple[str, ...]
    txn_token_required: bool = False
    proofs: frozenset[ProofStyle] = frozenset({ProofStyle.WPT})

    def requires_txn_token(self, context_extensions: Mapping[str, str]) -> bool:
        setting = context_extensions.get(TXN_TOKEN_CONTEXT_KEY)
        if setting is None:
            return self.txn_token_required
        if setting not in ("required", "optional"):
            # A route typo must not silently drop a requirement: answered as our fault.
            raise UnavailableError(
                Reason.ROUTE_CONFIG_INVALID,
                f"{TXN_TOKEN_CONTEXT_KEY} must be 'required' or 'optional', not {setting!r}",
            )
        return setting == "required"

    def audiences(self, path: str) -> tuple[str, ...]:
        """The WPT `aud` (or signature `wimse-aud`) values acceptable for a request to `path`
        (raw, query removed)."""
        return tuple(origin + path for origin in self.origins)

    def proof_target(self, path: str, *, body_forwarded: bool) -> ProofTarget:
        """What a proof for a request to `path` must name and may be; `body_forwarded` is the
        route's `route_forwards_body`."""
        return ProofTarget(self.audiences(path), self.proofs, body_forwarded=body_forwarded)


def route_dry_run(context_extensions: Mapping[str, str], default: bool) -> bool:
    """Whether policy denials on this route are only logged: the route's `wimse.dry_run`
    (`true`/`false`), else the global `dry_run`."""
    setting = context_extensions.get(DRY_RUN_CONTEXT_KEY)
    if setting is None:
        return default
    if setting not in ("true", "false"):
        # Like a Txn-Token requirement, a typo must not silently change enforcement.
        raise UnavailableError(
            Reason.ROUTE_CONFIG_INVALID,
            f"{DRY_RUN_CONTEXT_KEY} must be 'true' or 'false', not {setting!r}",
        )
    return setting == "true"


def route_forwards_body(context_extensions: Mapping[str, str]) -> bool:
    """Whether the route declares that Envoy forwards request bodies to the gateway as exact
    bytes (`wimse.body: forwarded`); absent means it does not."""
    setting = context_extensions.get(BODY_CONTEXT_KEY)
    if setting is None:
        return False
    if setting != BODY_FORWARDED:
        # Only one value exists: anything else is a typo that must not guess either way.
        raise UnavailableError(
            Reason.ROUTE_CONFIG_INVALID,
            f"{BODY_CONTEXT_KEY} must be {BODY_FORWARDED!r} or absent, not {setting!r}",
        )
    return True


class ServiceRouter:
    def __init__(self, services: Mapping[str, ServiceTarget], default: str | None) -> None:
        self._services = dict(services)
        self._default = self._services[default] if default is not None else None

    @classmethod
    def from_config(cls, config: Config) -> ServiceRouter:
        services = {
            name: ServiceTarget(
                name,
                service.workload_id,
                tuple(service.origins),
                txn_token_required=service.txn_token == "required"
                if service.txn_token is not None
                else config.txn_token.required,
                proofs=frozenset(ProofStyle(style) for style in service.proofs),
            )
            for name, service in config.services.items()
        }
        return cls(services, config.default_service)

    def select(self, context_extensions: Mapping[str, str]) -> ServiceTarget:
        name = context_extensions.get(SERVICE_CONTEXT_KEY)
        if name is None:
            if self._default is None:
                raise UnavailableError(
                    Reason.SERVICE_UNKNOWN, f"route sets no {SERVICE_CONTEXT_KEY} and no default"
                )
            return self._default
        service = self._services.get(name)
        if service is None:
            raise UnavailableError(Reason.SERVICE_UNKNOWN, f"route names unknown service {name!r}")
        return service

"""Which protected service a request is for, and the route's settings for it.

`service_selection: route` (the default): a route names its service in the `wimse.service`
context extension; routes that name none use the configured default.
`service_selection: destination_principal` (Istio, whose ext_authz provider sets no
per-route context extensions): the service whose `id` equals, byte for byte, the principal
Envoy reports for the callee; a route that still names a service must name that one.
Either way, a request nothing assigns may be taken by a service that opted in with
`select_by_host` when `scheme://authority` equals one of its origins exactly (ingress
gateways, where Envoy routes on that same authority); otherwise `Host` never takes part.
The service fixes the target URIs a WPT `aud` may carry: its configured origins plus the
request's raw path.
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
from authz.credentials.identifiers import InvalidIdentifier, WorkloadId, parse_workload_id
from authz.credentials.presentation import ProofStyle
from authz.errors import UnavailableError
from authz.reasons import Reason
from authz.request import RequestView


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    name: str
    id: WorkloadId
    origins: tuple[str, ...]
    txn_token_required: bool = False
    proofs: frozenset[ProofStyle] = frozenset({ProofStyle.WPT})
    select_by_host: bool = False
    body_forwarded: bool = False
    """The service declares Envoy forwards its bodies on every route (`body: forwarded`)."""

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
        """What a proof for a request to `path` must name and may be; `body_forwarded` is
        `forwards_body` for its route."""
        return ProofTarget(self.audiences(path), self.proofs, body_forwarded=body_forwarded)

    def forwards_body(self, context_extensions: Mapping[str, str]) -> bool:
        """Whether Envoy forwards this request's body as exact bytes: the route's
        `wimse.body` when it sends one, else the service's `body` setting."""
        if BODY_CONTEXT_KEY in context_extensions:
            return route_forwards_body(context_extensions)
        return self.body_forwarded


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
    def __init__(
        self,
        services: Mapping[str, ServiceTarget],
        default: str | None,
        *,
        by_destination_principal: bool = False,
    ) -> None:
        """`by_destination_principal`: `service_selection: destination_principal`; then
        `default` must be None and no two services may share an `id` (the configuration
        refuses both)."""
        self._services = dict(services)
        self._default = self._services[default] if default is not None else None
        self._by_principal = (
            {service.id.uri: service for service in self._services.values()}
            if by_destination_principal
            else None
        )
        self._by_origin = {
            origin: service
            for service in self._services.values()
            if service.select_by_host
            for origin in service.origins
        }

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
                select_by_host=service.select_by_host,
                body_forwarded=service.body == "forwarded",
            )
            for name, service in config.services.items()
        }
        return cls(
            services,
            config.default_service,
            by_destination_principal=config.service_selection == "destination_principal",
        )

    def select(self, request: RequestView) -> ServiceTarget:
        """The protected service `request` is for; `UnavailableError` when none is
        (`service.unknown`) or the route contradicts the principal (`route.config_invalid`):
        a configuration mismatch is our outage, never a denial of the caller."""
        if self._by_principal is not None:
            return self._select_by_principal(request, self._by_principal)
        name = request.context_extensions.get(SERVICE_CONTEXT_KEY)
        if name is None:
            service = self._by_host(request) or self._default
            if service is None:
                raise UnavailableError(
                    Reason.SERVICE_UNKNOWN, f"route sets no {SERVICE_CONTEXT_KEY} and no default"
                )
            return service
        service = self._services.get(name)
        if service is None:
            raise UnavailableError(Reason.SERVICE_UNKNOWN, f"route names unknown service {name!r}")
        return service

    def _select_by_principal(
        self, request: RequestView, by_principal: Mapping[str, ServiceTarget]
    ) -> ServiceTarget:
        principal = request.destination_principal
        service = by_principal.get(principal)
        if service is None and not _names_a_workload(principal):
            # An ingress gateway's own certificate (a DNS name, or none): the request is
            # for whatever its authority names. A workload id that is no service's is a
            # callee this gateway does not protect; its Host must not make it one.
            service = self._by_host(request)
        if service is None:
            raise UnavailableError(
                Reason.SERVICE_UNKNOWN,
                f"destination principal {principal!r} is no configured service's id"
                if principal
                else "Envoy reported no destination principal",
            )
        named = request.context_extensions.get(SERVICE_CONTEXT_KEY)
        if named is not None and named != service.name:
            # Two sources of truth disagree: trusting either could check a proof against
            # the wrong service's origins and policy, so neither is.
            raise UnavailableError(
                Reason.ROUTE_CONFIG_INVALID,
                f"route names service {named!r}, the destination is {service.name!r}",
            )
        return service

    def _by_host(self, request: RequestView) -> ServiceTarget | None:
        """The opted-in service one of whose origins is exactly this request's
        `scheme://authority` (as Envoy forwarded both), if any."""
        if not self._by_origin:
            return None
        http = request.attributes.request.http
        return self._by_origin.get(f"{http.scheme}://{http.host}")


def _names_a_workload(principal: str) -> bool:
    """Whether Envoy's principal is a workload identifier (a SPIFFE or WIMSE URI)."""
    try:
        parse_workload_id(principal)
    except InvalidIdentifier:
        return False
    return True

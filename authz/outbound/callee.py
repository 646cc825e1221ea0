"""Which callee an egress request is for, and the target URI its proof must name.

The route names the callee (`wimse.service`, a key of `outbound.callees`); its origin comes
from configuration, never from `Host` or anything else in the request, so a proof for one
callee cannot be asked for on behalf of another. The path is the one Envoy will send: the
request's canonical path, or, on a route that rewrites a prefix, the path after that
rewrite, declared on the route as `wimse.path_prefix` and `wimse.prefix_rewrite` (the
values of its `match.prefix` and `prefix_rewrite`; `wimse-authz envoy check-egress` checks
they agree). The query is never part of the target URI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from authz.config import SERVICE_CONTEXT_KEY
from authz.config.outbound import CalleeConfig
from authz.credentials.presentation import ProofStyle
from authz.errors import UnavailableError
from authz.reasons import Reason

PATH_PREFIX_KEY = "wimse.path_prefix"
"""The `match.prefix` of an egress route that rewrites it."""
PREFIX_REWRITE_KEY = "wimse.prefix_rewrite"
"""That route's `prefix_rewrite`."""


@dataclass(frozen=True, slots=True)
class Callee:
    name: str
    origin: str
    proof: ProofStyle
    bound_headers: tuple[str, ...]

    def audience(self, path: str) -> str:
        """The WPT `aud` (or `wimse-aud`) of a request Envoy sends to `path`."""
        return self.origin + path


class CalleeRouter:
    def __init__(self, callees: Mapping[str, CalleeConfig]) -> None:
        self._callees = {
            name: Callee(name, callee.origin, ProofStyle(callee.proof), tuple(callee.bound_headers))
            for name, callee in callees.items()
        }

    def select(self, context_extensions: Mapping[str, str]) -> Callee:
        """The route's callee; `UnavailableError` (a configuration fault, 503) when the
        route names none or one that is not configured."""
        name = context_extensions.get(SERVICE_CONTEXT_KEY)
        callee = self._callees.get(name) if name is not None else None
        if callee is None:
            raise UnavailableError(
                Reason.OUTBOUND_CALLEE_UNKNOWN,
                f"the route's {SERVICE_CONTEXT_KEY} names no configured callee ({name!r})",
            )
        return callee


def upstream_path(path: str, context_extensions: Mapping[str, str]) -> str:
    """The path Envoy's router will send for a request to `path` (canonical, no query)."""
    prefix = context_extensions.get(PATH_PREFIX_KEY)
    rewrite = context_extensions.get(PREFIX_REWRITE_KEY)
    if prefix is None and rewrite is None:
        return path
    if prefix is None or rewrite is None:
        raise UnavailableError(
            Reason.ROUTE_CONFIG_INVALID,
            f"a route declares both {PATH_PREFIX_KEY} and {PREFIX_REWRITE_KEY}, or neither",
        )
    if not path.startswith(prefix) or not rewrite.startswith("/"):
        # Envoy matched this route by that prefix: a path without it means the declaration
        # is not the route's, and a proof for a guessed path must not be minted.
        raise UnavailableError(
            Reason.ROUTE_CONFIG_INVALID,
            f"the path does not start with the route's {PATH_PREFIX_KEY}, or "
            f"{PREFIX_REWRITE_KEY} does not start with /",
        )
    return rewrite + path[len(prefix) :]

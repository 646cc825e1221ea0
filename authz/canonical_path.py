"""The one shape of request path the gateway decides on.

Policies match paths segment by segment (`input.parsed_path`), and a WPT `aud` or an HTTP
signature's `@path` binds the path byte for byte. Both are only sound when the upstream
reads the path the same way. Upstreams disagree on exactly the shapes refused here: many
merge `//` (nginx), drop `;` path parameters (Tomcat, Spring: `/refunds;x` serves
`/refunds`), resolve dot segments, or decode `%2F` and `%5C` into separators. Envoy's
`normalize_path` and `merge_slashes` remove some of them, but not `;`, and not every Envoy
in front of the gateway is configured like `deploy/envoy/` (Istio, hand-written configs).
So such a path is refused before any credential is looked at, rather than decided on in
a form the upstream may not serve.
"""

from __future__ import annotations

from authz.errors import RequestError
from authz.reasons import Reason

# Compared against the lower-cased path, so `%3B` and `%3b` are one entry.
_FORBIDDEN_TEXT = (
    (";", "a ';' path parameter"),
    ("%3b", "a percent-encoded ';'"),
    ("%2f", "a percent-encoded '/'"),
    ("%5c", "a percent-encoded '\\'"),
    ("\\", "a backslash"),
)
_DOT_SEGMENTS = frozenset((".", ".."))


def require_canonical_path(path: str) -> None:
    """Return if `path` (a request path, its query already removed) is canonical; raise a
    `RequestError` with `request.path_not_canonical` otherwise.

    Canonical: it starts with `/`; no segment is empty except the last (no `//`; `/` and a
    trailing slash are fine); no segment is `.` or `..`, percent-encoded or not (`%2e`);
    and it holds no `;`, `%3B`, `%2F`, `%5C` or `\\`, in any case. Anything else, including
    percent-encoded unreserved characters (`/%61`), is left to `parse_path`.
    """
    if not path.startswith("/"):
        raise _not_canonical("does not start with '/'")
    lowered = path.lower()
    for text, what in _FORBIDDEN_TEXT:
        if text in lowered:
            raise _not_canonical(f"holds {what}")
    if "//" in path:
        raise _not_canonical("has an empty segment ('//')")
    for segment in lowered.split("/"):
        # Only '.' and '%2e' can spell a dot segment, so no full decoding is needed.
        if segment.replace("%2e", ".") in _DOT_SEGMENTS:
            raise _not_canonical("has a '.' or '..' segment")


def _not_canonical(what: str) -> RequestError:
    return RequestError(Reason.REQUEST_PATH_NOT_CANONICAL, f"path {what}")

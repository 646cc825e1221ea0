"""One exception tree, caught by meaning.

Every failure the gateway can answer for is an `AuthzError` carrying a `Reason` (the
machine code that denies, logs and metrics use) and a human message (for logs only:
messages never reach the client, and never contain token bytes). The subclass says which
class of answer Envoy gets:

- `CredentialError`: credentials were presented and are not valid (401, or 400 for
  HTTP-signature requests);
- `RequestError`: the request itself cannot be evaluated (400);
- `UnavailableError`: the gateway cannot decide right now (503, never 403).
"""

from __future__ import annotations

from authz.reasons import Reason


class AuthzError(Exception):
    """A failure with a stable reason code."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class CredentialError(AuthzError):
    """Presented workload credentials failed verification."""


class RequestError(AuthzError):
    """The request is malformed in a way that prevents evaluation."""


class UnavailableError(AuthzError):
    """The gateway itself cannot decide (engine failure, capacity, configuration)."""


class ConfigError(Exception):
    """Configuration that cannot be loaded; the message names the offending key."""


def is_rust_panic(error: BaseException) -> bool:
    """pyo3 raises a Rust panic (regorus, cryptography) as `pyo3_runtime.PanicException`, a
    BaseException that `except Exception` misses and that cannot be imported by name."""
    return type(error).__name__ == "PanicException"

"""OPA built-ins that regorus lacks, supplied to it as Python engine extensions.

``register_extensions(engine)`` adds every entry of ``EXTENSIONS`` to a ``regorus.Engine``;
each is registered under OPA's own name, so policies call ``io.jwt.decode_verify(...)`` or
``crypto.x509.parse_certificates(...)`` exactly as they would under OPA. What each supports is
documented in :mod:`authz.policy.builtins.jwt` and :mod:`authz.policy.builtins.x509`.

Two engine limits apply to every extension:

* An extension that raises aborts the whole evaluation with a ``RuntimeError``. OPA, outside its
  strict mode, would make just that expression undefined; regorus has no way to express that.
* regorus rejects the "output as last argument" call form (``io.jwt.decode(t, [h, p, s])``)
  for extensions; write ``[h, p, s] := io.jwt.decode(t)`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authz.policy.builtins import jwt, x509

if TYPE_CHECKING:
    import regorus


@dataclass(frozen=True, slots=True)
class Extension:
    """One built-in: the Rego name it is called by, its arity and its implementation."""

    path: str
    nargs: int
    function: Callable[..., Any]


EXTENSIONS: tuple[Extension, ...] = (
    Extension("io.jwt.decode", 1, jwt.decode),
    Extension("io.jwt.decode_verify", 2, jwt.decode_verify),
    Extension("io.jwt.verify_rs256", 2, jwt.verify_rs256),
    Extension("io.jwt.verify_rs384", 2, jwt.verify_rs384),
    Extension("io.jwt.verify_rs512", 2, jwt.verify_rs512),
    Extension("io.jwt.verify_ps256", 2, jwt.verify_ps256),
    Extension("io.jwt.verify_ps384", 2, jwt.verify_ps384),
    Extension("io.jwt.verify_ps512", 2, jwt.verify_ps512),
    Extension("io.jwt.verify_es256", 2, jwt.verify_es256),
    Extension("io.jwt.verify_es384", 2, jwt.verify_es384),
    Extension("io.jwt.verify_es512", 2, jwt.verify_es512),
    Extension("io.jwt.verify_eddsa", 2, jwt.verify_eddsa),
    Extension("io.jwt.verify_hs256", 2, jwt.verify_hs256),
    Extension("io.jwt.verify_hs384", 2, jwt.verify_hs384),
    Extension("io.jwt.verify_hs512", 2, jwt.verify_hs512),
    Extension("crypto.x509.parse_certificates", 1, x509.parse_certificates),
)


def register_extensions(engine: regorus.Engine) -> None:
    """Add every extension to ``engine`` (before or after its policies are added)."""
    for extension in EXTENSIONS:
        engine.add_extension(extension.path, extension.nargs, extension.function)

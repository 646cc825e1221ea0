"""The embedded Rego engine: Microsoft's regorus, compiled once, one engine per thread.

regorus engines are bound to the thread that created them (using one elsewhere panics), so
each thread that evaluates gets its own engine, built once from the immutable `PolicySet`
and reused for every later decision on that thread. Any failure inside the engine, a Rust
panic included, becomes `PolicyEngineError`; after a panic the thread's engine is dropped
and rebuilt on next use, since its internal state can no longer be trusted.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import regorus

from authz.errors import ConfigError, is_rust_panic
from authz.policy.builtins import register_extensions
from authz.policy.engine import PolicyEngineError
from authz.policy.loader import PolicySet
from authz.policy.rego_ast import rule_heads

# regorus refuses lines over 1024 columns by default; policy files come from operators and
# routinely inline certificates or tokens on one line. These bounds only stop absurd files.
POLICY_LENGTH_LIMITS = {"max_col": 1 << 20, "max_file_bytes": 16 << 20, "max_lines": 1 << 20}


def build_engine(policy_set: PolicySet) -> Any:
    """A fresh regorus engine holding the set's modules, data and our builtin extensions."""
    engine = regorus.Engine()
    engine.set_policy_length_config(**POLICY_LENGTH_LIMITS)
    register_extensions(engine)
    for path, source in policy_set.modules:
        try:
            engine.add_policy(path, source)
        except RuntimeError as exc:
            raise ConfigError(f"policy {path} does not compile:\n{exc}") from None
    engine.add_data(dict(policy_set.data))
    return engine


def check_rule_defined(engine: Any, rule: str) -> None:
    """Fail at load time, not per request, if the decision rule is not defined anywhere."""
    paths = {head.path for head in rule_heads(engine.get_ast_as_json())}
    if not any(rule == path or rule.startswith(path + ".") for path in paths):
        raise ConfigError(f"decision rule {rule} is not defined by any loaded policy")


class EmbeddedRegoEngine:
    """Evaluates one decision rule of one `PolicySet`."""

    def __init__(
        self,
        policy_set: PolicySet,
        decision_rule: str,
        on_rebuild: Callable[[], None] | None = None,
    ) -> None:
        self._policy_set = policy_set
        self._rule = decision_rule
        self._on_rebuild = on_rebuild
        self._local = threading.local()
        # Compile now, on the constructing thread, so a broken policy fails at start-up.
        check_rule_defined(self._engine(), decision_rule)

    @property
    def revision(self) -> str:
        return self._policy_set.revision

    @property
    def policy_set(self) -> PolicySet:
        return self._policy_set

    def _engine(self) -> Any:
        engine = getattr(self._local, "engine", None)
        if engine is None:
            engine = build_engine(self._policy_set)
            self._local.engine = engine
        return engine

    async def evaluate(self, input_document: dict[str, Any]) -> object:
        # regorus holds the GIL while it runs (~tens of microseconds), so handing it to a
        # thread pool would add latency without adding parallelism: evaluate in place.
        return self.evaluate_now(input_document)

    def evaluate_now(self, input_document: dict[str, Any]) -> object:
        engine = self._engine()
        try:
            engine.set_input(input_document)
            return engine.eval_rule(self._rule)
        except Exception as exc:  # noqa: BLE001 - any engine failure is "cannot decide"
            raise PolicyEngineError(f"evaluation failed: {redacted_error_summary(exc)}") from None
        except BaseException as exc:
            if not is_rust_panic(exc):
                raise
            self._local.engine = None
            if self._on_rebuild is not None:
                self._on_rebuild()
            raise PolicyEngineError(f"engine panicked: {redacted_error_summary(exc)}") from None


def error_summary(error: BaseException) -> str:
    """The message line of a regorus error (its last line: the lines before it show the
    policy source around the failure)."""
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


# Builtin type errors quote the offending value (`object.get expects object argument. Got
# "eyJ…" instead`), and a value from the input may be a token, a header map, a body.
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)?")


def redacted_error_summary(error: BaseException) -> str:
    """`error_summary` without quoted values or anything shaped like a token: what the
    serving path may log about an evaluation error."""
    summary = _QUOTED.sub('"…"', error_summary(error))
    return _COMPACT_JWS.sub("…", summary)

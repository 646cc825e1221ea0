from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from authz.errors import ConfigError, is_rust_panic
from authz.policy.embedded import EmbeddedRegoEngine
from authz.policy.engine import PolicyEngineError
from authz.policy.loader import load_policy_set

POLICY = """
package envoy.authz
import rego.v1
default allow := false
allow if input.method == "GET"
boom := 1 / count(input.items)
"""


def write_policy(directory: Path, source: str = POLICY) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.rego").write_text(source)
    return directory


def engine(
    tmp_path: Path, rule: str = "data.envoy.authz.allow", **kwargs: object
) -> EmbeddedRegoEngine:
    return EmbeddedRegoEngine(load_policy_set(write_policy(tmp_path)), rule, **kwargs)  # type: ignore[arg-type]


def test_evaluates_the_decision_rule(tmp_path: Path) -> None:
    rego = engine(tmp_path)
    assert asyncio.run(rego.evaluate({"method": "GET"})) is True
    assert asyncio.run(rego.evaluate({"method": "POST"})) is False


def test_undefined_rule_value_is_none(tmp_path: Path) -> None:
    write_policy(tmp_path, "package envoy.authz\nimport rego.v1\nallow if input.ok\n")
    rego = EmbeddedRegoEngine(load_policy_set(tmp_path), "data.envoy.authz.allow")
    assert rego.evaluate_now({}) is None


def test_missing_decision_rule_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not defined"):
        engine(tmp_path, "data.envoy.authz.decision")


def test_policy_that_does_not_compile_fails_at_load(tmp_path: Path) -> None:
    write_policy(tmp_path, "package envoy.authz\nallow if {")
    with pytest.raises(ConfigError, match="does not compile"):
        EmbeddedRegoEngine(load_policy_set(tmp_path), "data.envoy.authz.allow")


def test_evaluation_errors_become_engine_errors(tmp_path: Path) -> None:
    rego = engine(tmp_path, "data.envoy.authz.boom")
    with pytest.raises(PolicyEngineError, match="evaluation failed"):
        rego.evaluate_now({"items": []})


def test_each_thread_gets_its_own_engine(tmp_path: Path) -> None:
    rego = engine(tmp_path)
    results: list[object] = []

    def evaluate() -> None:
        results.append(rego.evaluate_now({"method": "GET"}))

    worker = threading.Thread(target=evaluate)
    worker.start()
    worker.join()
    assert results == [True]


def capture_panic() -> BaseException:
    """A real `pyo3_runtime.PanicException`: regorus panics when an engine crosses threads."""
    import regorus

    created = regorus.Engine()
    caught: list[BaseException] = []

    def misuse() -> None:
        try:
            created.add_policy("p.rego", "package p")
        except BaseException as exc:
            caught.append(exc)

    worker = threading.Thread(target=misuse)
    worker.start()
    worker.join()
    return caught[0]


def test_a_rust_panic_is_an_engine_error_and_the_engine_is_rebuilt(tmp_path: Path) -> None:
    panic = capture_panic()
    assert is_rust_panic(panic)
    assert not isinstance(panic, Exception), "PanicException escapes `except Exception`"

    write_policy(
        tmp_path,
        "package envoy.authz\nimport rego.v1\nallow if test.panic(input.x)\nsafe := true\n",
    )
    rebuilds: list[int] = []
    rego = EmbeddedRegoEngine(
        load_policy_set(tmp_path), "data.envoy.authz.allow", on_rebuild=lambda: rebuilds.append(1)
    )

    def panicking_builtin(value: object) -> object:
        raise panic

    first = rego._engine()
    first.add_extension("test.panic", 1, panicking_builtin)
    with pytest.raises(PolicyEngineError, match="panicked"):
        rego.evaluate_now({"x": 1})
    assert rebuilds == [1]
    second = rego._engine()
    assert second is not first, "the engine that panicked is never used again"

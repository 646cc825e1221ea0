"""A decision rule compiled for regorus's VM: for measuring it against the interpreter only.

regorus compiles Rego into a program for its register VM (`regorus.Program`, run by
`regorus.Rvm`), which decides the sample policy in about half the interpreter's time. The
gateway does not serve with it: with the wheels measured (gordon-to-regorus 0.12.0 and
0.13.0) it decides differently from the interpreter, in both directions, on the sample
policy itself (`tests/unit/test_compiled_parity.py` pins each difference):

- an assignment of an undefined value (`x := input.missing`) does not end the rule body,
  so a later `not ...x...` holds: with a route rule that leaves out `methods` ("any
  method") the sample library's route matching says "outside", and a request the
  interpreter denies for want of a Txn-Token is allowed;
- a failing builtin call (`to_number("x")`, `count(5)`, a type error) is undefined, as in
  OPA outside its strict mode, where the interpreter aborts the evaluation (503
  `policy.error`); a conflict between complete rule values is undefined too. The Python
  binding has no strict mode;
- the VM stops after 25,000 instructions (not configurable from Python);
- the compiler refuses calls to the gateway's extensions (`io.jwt.*`, `crypto.x509.*`), the
  `with` keyword (so no Rego unit test compiles), `print`, and lines over 1,024 columns.

What remains useful: `bench/opa_conformance.py --engine compiled` and the parity tests use
this module to measure a new wheel against the interpreter in one command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

import regorus

from authz.errors import is_rust_panic
from authz.policy.embedded import error_summary
from authz.policy.loader import PolicySet

_UNDEFINED_ANSWER: Final = '"<undefined>"'


class _Undefined:
    """The type of `UNDEFINED`."""

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = _Undefined()
"""`CompiledDecision.evaluate`'s answer for an undefined rule (and, since the VM's answer
does not tell them apart, for a rule whose value is the string "<undefined>")."""


class NotCompilable(Exception):
    """The compiler refused the set, or its VM refused the set's data; the message says why."""


@dataclass(frozen=True, slots=True)
class CompiledProgram:
    """A decision rule compiled for the VM, with the set's data; immutable, so any thread
    may load its own VM from it."""

    rule: str
    """The entry point, as `data.envoy.authz.allow`."""
    binary: bytes
    data_json: str


def compile_decision(policy_set: PolicySet, rule: str) -> CompiledProgram:
    """Compile `rule` of the set's serving modules, and load it once with the set's data.

    Raises `NotCompilable` (never anything else for a set regorus cannot take) with the
    compiler's message.
    """
    try:
        data_json = json.dumps(policy_set.data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise NotCompilable(f"the policy data is not plain JSON: {exc}") from None
    try:
        program = regorus.Program.compile_from_modules(data_json, list(policy_set.modules), [rule])
        compiled = CompiledProgram(rule, bytes(program.serialize_binary()), data_json)
        # The VM checks the data against the rules only when it is loaded: do it now, once.
        CompiledDecision(compiled)
    except Exception as exc:  # noqa: BLE001 - every refusal is "not compilable"
        raise NotCompilable(error_summary(exc).strip()) from None
    except BaseException as exc:
        if not is_rust_panic(exc):
            raise
        raise NotCompilable(f"the compiler panicked: {error_summary(exc).strip()}") from None
    return compiled


class CompiledDecision:
    """One thread's VM, loaded with a `CompiledProgram`; usable only on the thread that
    made it (regorus panics otherwise)."""

    def __init__(self, compiled: CompiledProgram) -> None:
        program, partial = regorus.Program.deserialize_binary(compiled.binary)
        if partial:
            raise RuntimeError("the compiled program was read back incompletely")
        self._vm = regorus.Rvm()
        self._vm.load_program(program)
        self._vm.set_data_json(compiled.data_json)
        self._rule = compiled.rule

    def evaluate(self, input_document: object) -> object:
        """The rule's value for `input_document` (JSON-decoded, so a set arrives as a list in
        Rego's order and an object key that is not a string as a string), or `UNDEFINED`.

        Raises `TypeError`/`ValueError` for an input that is not plain JSON, and what the
        VM raises (`RuntimeError`: its instruction budget, ...; a panic).
        """
        self._vm.set_input_json(json.dumps(input_document, allow_nan=False, separators=(",", ":")))
        answer = self._vm.execute_entry_point(self._rule)
        if answer == _UNDEFINED_ANSWER:
            return UNDEFINED
        return json.loads(answer)

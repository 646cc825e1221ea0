"""One decision for one input document, outside the gateway: `wimse-authz policy eval`.

For policy authors. The policy directory is loaded, compiled (with the builtin extensions)
and its decision validated exactly as the gateway does; unlike the gateway, which redacts
engine errors because the input holds other people's tokens, the engine's full message is
reported, since the input here is the author's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import yaml
from pydantic import ValidationError

from authz.answers import Answers
from authz.config import PolicyConfig, ResponsesConfig, UpstreamConfig, load_config
from authz.errors import is_rust_panic
from authz.policy.decision import InvalidDecision, PolicyDecision, decision_from_result
from authz.policy.embedded import build_engine, check_rule_defined
from authz.policy.loader import PolicySet, load_policy_set
from authz.policy.rego_ast import rule_heads
from authz.strict_json import reject_constant


class EvalError(Exception):
    """The input, the extra data or the evaluation itself failed; the message says how.
    (Policy and configuration files that do not load raise `ConfigError`.)"""


@dataclass(frozen=True, slots=True)
class EvalSetup:
    """What to evaluate: a policy directory, its decision rule, and the headers a decision
    may not set (the gateway's identity and reason headers)."""

    directory: Path
    decision_rule: str
    """As `data.a.b.rule`."""
    managed_headers: frozenset[str]


def eval_setup(
    *, policy_dir: Path | None = None, config_path: Path | None = None, decision: str | None = None
) -> EvalSetup:
    """The setup from `--policy`, `--config` and `--decision`: an explicit directory or rule
    wins over the configuration's; the default rule is `envoy/authz/allow`."""
    responses, upstream = ResponsesConfig(), UpstreamConfig()
    configured: PolicyConfig | None = None
    if config_path is not None:
        config = load_config(config_path)
        responses, upstream, configured = config.responses, config.upstream, config.policy
    directory = policy_dir
    if directory is None and configured is not None:
        if configured.directory is None:
            source = "an OPA bundle" if configured.bundle is not None else "an OPA server"
            raise EvalError(
                f"{config_path}: policies come from {source}, which policy eval does not load "
                "yet: give the policy directory with --policy DIR"
            )
        directory = configured.directory
    if directory is None:
        raise EvalError("give the policy directory with --policy DIR, or a --config naming one")
    rule = decision or (configured.decision if configured is not None else None)
    try:
        policy = (
            PolicyConfig(directory=directory)
            if rule is None
            else PolicyConfig(directory=directory, decision=rule)
        )
    except ValidationError:
        raise EvalError(
            f"--decision {rule!r}: expected a rule path such as envoy/authz/allow"
        ) from None
    return EvalSetup(
        directory=directory,
        decision_rule=policy.decision,
        managed_headers=Answers(responses, upstream).managed_headers,
    )


def read_input(source: str, stdin: IO[str]) -> Any:
    """The JSON input document from a file, or from `stdin` when `source` is `-`."""
    try:
        text = stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"--input {source}: cannot read: {exc}") from None
    try:
        return json.loads(text, parse_constant=reject_constant)
    except ValueError as exc:
        raise EvalError(f"--input {source}: not JSON: {exc}") from None


INPUT_SCHEMA_PATH = Path(__file__).with_name("input.schema.json")


def check_input_shape(document: Any, source: str) -> None:
    """`EvalError` listing where `document` departs from the published input schema
    (`input.schema.json`, docs/policy-input.md): a document of the wrong shape would only
    be denied in silence, for a reason no rule states."""
    from jsonschema import Draft202012Validator  # noqa: PLC0415 - policy eval only

    schema = json.loads(INPUT_SCHEMA_PATH.read_text(encoding="utf-8"))
    errors = sorted(Draft202012Validator(schema).iter_errors(document), key=lambda e: list(e.path))
    if errors:
        problems = "\n".join(
            f"  /{'/'.join(map(str, error.path))}: {error.message}" for error in errors[:20]
        )
        raise EvalError(
            f"--input {source} is not a policy input (docs/policy-input.md; "
            f"--no-schema-check evaluates it anyway):\n{problems}"
        )


def read_data(path: Path) -> dict[str, Any]:
    """A JSON (or, by suffix, YAML) object to lay over the policy set's data."""
    try:
        text = path.read_text(encoding="utf-8")
        document = (
            yaml.safe_load(text)
            if path.suffix in (".yaml", ".yml")
            else json.loads(text, parse_constant=reject_constant)
        )
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"--data {path}: cannot read: {exc}") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise EvalError(f"--data {path}: cannot parse: {exc}") from None
    if not isinstance(document, dict):
        raise EvalError(f"--data {path}: must hold an object (the root of data)")
    return document


def overlay(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra` merged in: objects merge member by member, anything else in
    `extra` replaces what `base` had."""
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = overlay(current, value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True, slots=True)
class EvalOutcome:
    rule: str
    revision: str
    result: object
    """The rule's raw value; None when undefined."""
    decision: PolicyDecision
    explained: tuple[tuple[str, object], ...] = ()
    """With `explain`: every rule of the decision rule's package defined for this input,
    with its value (regorus has no trace; this is what the decision was made from)."""


def evaluate_once(
    setup: EvalSetup,
    input_document: Any,
    extra_data: Mapping[str, Any] | None = None,
    *,
    explain: bool = False,
) -> EvalOutcome:
    """Load, compile and evaluate; `ConfigError` if the policies do not load, `EvalError`
    with the engine's message if evaluation fails or the decision is malformed."""
    policy_set: PolicySet = load_policy_set(setup.directory)
    if extra_data:
        policy_set = replace(policy_set, data=overlay(policy_set.data, extra_data))
    engine = build_engine(policy_set)
    check_rule_defined(engine, setup.decision_rule)
    try:
        engine.set_input(input_document)
        result = engine.eval_rule(setup.decision_rule)
    except Exception as exc:  # noqa: BLE001 - any engine failure is reported whole
        raise EvalError(f"evaluating {setup.decision_rule} failed:\n{exc}") from None
    except BaseException as exc:
        if not is_rust_panic(exc):
            raise
        raise EvalError(f"the engine panicked evaluating {setup.decision_rule}: {exc}") from None
    try:
        decision = decision_from_result(result, setup.managed_headers)
    except InvalidDecision as exc:
        raise EvalError(
            f"{setup.decision_rule} returned a decision the gateway would refuse "
            f"(answered 503, {exc.reason}): {exc.message}"
        ) from None
    explained = _package_values(engine, setup.decision_rule) if explain else ()
    return EvalOutcome(setup.decision_rule, policy_set.revision, result, decision, explained)


def _package_values(engine: Any, decision_rule: str) -> tuple[tuple[str, object], ...]:
    """Each rule of the decision rule's package, evaluated: the defined ones, by name."""
    package = decision_rule.removeprefix("data.").rpartition(".")[0]
    names = sorted(
        {head.name for head in rule_heads(engine.get_ast_as_json()) if head.package == package}
    )
    values: list[tuple[str, object]] = []
    for name in names:
        try:
            value = engine.eval_rule(f"data.{package}.{name}")
        except Exception as exc:  # noqa: BLE001 - shown as what the rule did
            value = f"error: {exc}"
        except BaseException as exc:
            if not is_rust_panic(exc):
                raise
            # A panicked engine is not evaluated further (`policy test` rebuilds one).
            values.append((name, f"error: the engine panicked: {exc}"))
            break
        if value is not None:
            values.append((name, value))
    return tuple(values)


def _plain(value: object) -> Any:
    """Rego sets arrive as Python sets; JSON wants lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((_plain(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def outcome_json(outcome: EvalOutcome) -> dict[str, Any]:
    """The `--json` form: the validated decision's fields, and the raw `result`."""
    decision = outcome.decision
    return {
        "allowed": decision.allowed,
        "defined": decision.defined,
        "rule": outcome.rule,
        "revision": outcome.revision,
        "http_status": decision.http_status,
        "reasons": list(decision.reasons),
        "headers": [list(pair) for pair in decision.headers],
        "response_headers_to_add": [list(pair) for pair in decision.response_headers_to_add],
        "request_headers_to_remove": list(decision.request_headers_to_remove),
        "query_parameters_to_set": [list(pair) for pair in decision.query_parameters_to_set],
        "query_parameters_to_remove": list(decision.query_parameters_to_remove),
        "body": decision.body,
        "dynamic_metadata": _plain(decision.dynamic_metadata),
        "result": _plain(outcome.result),
        **(
            {"explained": {name: _plain(value) for name, value in outcome.explained}}
            if outcome.explained
            else {}
        ),
    }


def describe_outcome(outcome: EvalOutcome) -> str:
    """A few lines for people: the verdict first, then each field the decision set."""
    decision = outcome.decision
    where = f"{outcome.rule}, policy revision {outcome.revision}"
    if not decision.defined:
        return (
            f"DENY (undefined: {outcome.rule} has no value for this input; "
            f"policy revision {outcome.revision})"
        )
    lines = [f"{'ALLOW' if decision.allowed else 'DENY'} ({where})"]
    if decision.http_status is not None:
        lines.append(f"http_status: {decision.http_status}")
    if decision.reasons:
        lines.append(f"reasons: {', '.join(decision.reasons)}")
    for title, pairs in (
        ("headers", decision.headers),
        ("response_headers_to_add", decision.response_headers_to_add),
        ("query_parameters_to_set", decision.query_parameters_to_set),
    ):
        if pairs:
            lines.append(f"{title}:")
            lines.extend(f"  {name}: {value}" for name, value in pairs)
    for title, names in (
        ("request_headers_to_remove", decision.request_headers_to_remove),
        ("query_parameters_to_remove", decision.query_parameters_to_remove),
    ):
        if names:
            lines.append(f"{title}: {', '.join(names)}")
    if decision.body is not None:
        lines.append(f"body: {decision.body}")
    if decision.dynamic_metadata:
        metadata = json.dumps(_plain(decision.dynamic_metadata), sort_keys=True)
        lines.append(f"dynamic_metadata: {metadata}")
    if outcome.explained:
        package = outcome.rule.rpartition(".")[0]
        lines.append(f"rules of {package} defined for this input:")
        lines.extend(
            f"  {name} = {json.dumps(_plain(value), sort_keys=True)}"
            for name, value in outcome.explained
        )
    return "\n".join(lines)

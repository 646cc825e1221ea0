"""`wimse-authz`: serve, check a configuration, test policies, mint dev keys and tokens, demo.

Developer tooling (`keys`, `token`, `demo`) is imported only when its command runs, so the
serving path never loads the local issuer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from authz import __version__
from authz.errors import ConfigError


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from authz.config import load_config
    from authz.server.app import serve

    config = load_config(args.config)
    _configure_logging(config.logging.level)
    asyncio.run(serve(config))
    return 0


def _cmd_config_check(args: argparse.Namespace) -> int:
    from authz.config import load_config
    from authz.gateway import build_gateway

    config = load_config(args.config)
    gateway = build_gateway(config)
    print(
        f"{args.config}: OK — {len(config.trust_domains)} trust domain(s), "
        f"{len(config.services)} service(s), policy revision {gateway.pipeline.engine.revision}"
    )
    return 0


def _cmd_policy_test(args: argparse.Namespace) -> int:
    from authz.policy.testing import run_policy_tests

    outcomes = run_policy_tests(args.directory)
    failed = [o for o in outcomes if not o.passed and not o.skipped]
    for outcome in outcomes:
        where = f"{outcome.rule.file}:{outcome.rule.line}"
        if outcome.skipped:
            print(f"SKIPPED {outcome.rule.path} ({where})")
        elif not outcome.passed:
            detail = f": {outcome.error}" if outcome.error else ""
            print(f"FAIL {outcome.rule.path} ({where}){detail}")
        elif args.verbose:
            print(f"PASS {outcome.rule.path} ({outcome.seconds * 1e3:.2f} ms)")
    ran = [o for o in outcomes if not o.skipped]
    if not ran:
        print(f"no Rego tests found under {args.directory}")
        return 1
    print("--------------------------------------------------------------------------------")
    print(
        f"PASS: {len(ran) - len(failed)}/{len(ran)}" + (f", FAIL: {len(failed)}" if failed else "")
    )
    return 1 if failed else 0


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _token_argument(value: str) -> str:
    """A token given inline, or `@path` to read it from a file."""
    if value.startswith("@"):
        return Path(value[1:]).read_text(encoding="utf-8").strip()
    return value


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from authz.devtools.keys import generate_private_jwk, public_jwk

    private = generate_private_jwk(args.alg, args.kid)
    args.out.write_text(json.dumps(private, indent=2) + "\n", encoding="utf-8")
    args.out.chmod(0o600)
    if args.jwks is not None:
        jwks = _read_json(args.jwks) if args.jwks.exists() else {"keys": []}
        jwks["keys"].append(public_jwk(private))
        args.jwks.write_text(json.dumps(jwks, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} (alg {private['alg']}, kid {private['kid']})")
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

    _configure_logging("warning")
    return run_demo(args.dir, args.envoy_port, args.gateway_port, args.upstream_port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wimse-authz", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the ext_authz gRPC server")
    serve.add_argument("--config", type=Path, required=True)
    serve.set_defaults(handler=_cmd_serve)

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="load a config, its keys and policies")
    check.add_argument("--config", type=Path, required=True)
    check.set_defaults(handler=_cmd_config_check)

    policy = commands.add_parser("policy", help="policy tools")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    test = policy_commands.add_parser("test", help="run Rego unit tests (test_* rules)")
    test.add_argument("directory", type=Path, nargs="?", default=Path("policies"))
    test.add_argument("-v", "--verbose", action="store_true")
    test.set_defaults(handler=_cmd_policy_test)

    keys = commands.add_parser("keys", help="dev keys (never for production issuers)")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_commands.add_parser("generate", help="generate a private JWK")
    generate.add_argument("--alg", default="ES256")
    generate.add_argument("--kid")
    generate.add_argument("--out", type=Path, required=True, help="private JWK file to write")
    generate.add_argument("--jwks", type=Path, help="JWKS file to add the public key to")
    generate.set_defaults(handler=_cmd_keys_generate)

    token = commands.add_parser("token", help="a local issuer for tests and demos")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    mint = token_commands.add_parser("mint", help="mint a token")
    kinds = mint.add_subparsers(dest="kind", required=True)
    wit = kinds.add_parser("wit", help="a Workload Identity Token")
    wit.add_argument("--issuer-key", type=Path, required=True)
    wit.add_argument("--sub", required=True, help="workload identifier")
    wit.add_argument("--workload-key", type=Path, required=True, help="key the WIT confirms")
    wit.add_argument("--ttl", type=float, default=3600)
    wit.set_defaults(handler=_cmd_mint_wit)
    wpt = kinds.add_parser("wpt", help="a Workload Proof Token for one request")
    wpt.add_argument("--workload-key", type=Path, required=True)
    wpt.add_argument("--wit", required=True, help="the WIT, or @file")
    wpt.add_argument("--aud", required=True, help="target URI: origin + path, no query")
    wpt.add_argument("--ttl", type=float, default=60)
    wpt.add_argument("--txn-token", help="Txn-Token to bind with tth (or @file)")
    wpt.add_argument(
        "--bind", action="append", default=[], metavar="HEADER=VALUE", help="bind with oth"
    )
    wpt.set_defaults(handler=_cmd_mint_wpt)
    txn = kinds.add_parser("txn", help="a Transaction Token, as a trust domain's TTS issues it")
    txn.add_argument("--tts-key", type=Path, required=True)
    txn.add_argument("--aud", required=True, help="the trust domain the token is for")
    txn.add_argument("--req-wl", required=True, help="the workload that asked for the token")
    txn.add_argument("--sub", required=True, help="the transaction's principal")
    txn.add_argument("--scope", required=True, help="space-separated purpose")
    txn.add_argument("--tctx", type=_json_object, help="transaction context (JSON or @file)")
    txn.add_argument("--rctx", type=_json_object, help="request context (JSON or @file)")
    txn.add_argument("--act", type=_json_object, help="RFC 8693 actor, e.g. '{\"sub\": ...}'")
    txn.add_argument("--ttl", type=float, default=300)
    txn.set_defaults(handler=_cmd_mint_txn)
    ear = kinds.add_parser("ear", help="an attestation result (EAR JWT) from a verifier")
    ear.add_argument("--verifier-key", type=Path, required=True)
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
    user.add_argument("--issuer-key", type=Path, required=True)
    user.add_argument("--iss", required=True)
    user.add_argument("--sub", required=True)
    user.add_argument("--aud", required=True)
    user.add_argument("--client-id", default="demo-client")
    user.add_argument("--scope", default="")
    user.add_argument("--role", action="append", help="repeat for several roles")
    user.add_argument("--ttl", type=float, default=600)
    user.add_argument("--id-token", action="store_true", help="an OIDC ID token (no at+jwt typ)")
    user.set_defaults(handler=_cmd_mint_user)

    demo = commands.add_parser("demo", help="run gateway + Envoy + sample upstream locally")
    demo.add_argument("--dir", type=Path, default=Path(".demo"))
    demo.add_argument("--envoy-port", type=int, default=10000)
    demo.add_argument("--gateway-port", type=int, default=9191)
    demo.add_argument("--upstream-port", type=int, default=8081)
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"wimse-authz: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

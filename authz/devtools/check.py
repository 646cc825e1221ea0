"""`wimse-authz check`: one hand-made Envoy `CheckRequest`, sent to a running gateway.

The request is built as Envoy would send it (lower-case header names, repeats joined with
commas, `:path` with its query) and can carry credentials minted on the spot: a WIT from an
issuer key, and a fresh WPT whose `aud` is the URL without its query, binding the Txn-Token
(`tth`) and any chosen headers (`oth`). The answer is read back into a `CheckAnswer`.

Developer tooling: it mints with whatever keys it is given and is never imported by the
serving path.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.protobuf import json_format
from google.rpc import code_pb2
from pydantic import ValidationError

from authz.config import ListenerConfig
from authz.credentials.presentation import AUTHORIZATION_HEADER, TXN_TOKEN_HEADER, WIT_HEADER
from authz.devtools.mint import mint_wit, mint_wpt
from authz.http_names import HEADER_NAME

REASON_HEADER = "x-wimse-authz-reason"
"""Where a denial's reason code is looked for when its dynamic metadata carries none (the
default `responses.reason_header`)."""

HeaderList = tuple[tuple[str, str], ...]


class CheckError(Exception):
    """The request could not be built or sent; the message says which option or what the
    gateway's gRPC status was."""


def build_check_request(
    *,
    host: str,
    path: str,
    method: str = "GET",
    scheme: str = "https",
    headers: Mapping[str, str] | None = None,
    body: str = "",
    raw_body: bytes = b"",
    context: Mapping[str, str] | None = None,
    source_principal: str = "",
    destination_principal: str = "",
    source_address: tuple[str, int] | None = None,
    destination_address: tuple[str, int] | None = None,
    request_id: str = "",
    protocol: str = "HTTP/1.1",
    raw_headers: bool = False,
) -> CheckRequest:
    """A `CheckRequest` holding exactly what is given: nothing is normalised or validated,
    so tests can build requests Envoy would never send.

    `path` is `:path` (query included); `http.size` is the length of `raw_body`, else of
    `body`; `context` becomes `context_extensions`. `raw_headers` sends the headers as
    Envoy's `encode_raw_headers` does: in `header_map`, each value as `raw_value` bytes.
    """
    request = CheckRequest()
    attributes = request.attributes
    http = attributes.request.http
    http.id = request_id
    http.method = method
    http.path = path
    http.host = host
    http.scheme = scheme
    http.protocol = protocol
    for name, value in (headers or {}).items():
        if raw_headers:
            http.header_map.headers.add(key=name, raw_value=value.encode("utf-8"))
        else:
            http.headers[name] = value
    if body:
        http.body = body
        http.size = len(body.encode())
    if raw_body:
        http.raw_body = raw_body
        http.size = len(raw_body)
    for peer, address in (
        (attributes.source, source_address),
        (attributes.destination, destination_address),
    ):
        if address is not None:
            peer.address.socket_address.address = address[0]
            peer.address.socket_address.port_value = address[1]
    if source_principal:
        attributes.source.principal = source_principal
    if destination_principal:
        attributes.destination.principal = destination_principal
    for key, value in (context or {}).items():
        attributes.context_extensions[key] = value
    return request


# --- the command line's request ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """The `check` command's options as typed; `prepare_check_request` parses them."""

    method: str = "GET"
    url: str | None = None
    host: str | None = None
    path: str | None = None
    scheme: str = "https"
    headers: tuple[str, ...] = ()
    """`name: value` lines, as curl's `-H` takes them."""
    body: str | None = None
    """Text, or `@file` for the file's bytes."""
    context: tuple[str, ...] = ()
    """`key=value` context extensions."""
    source_principal: str = ""
    destination_principal: str = ""
    wit: str | None = None
    """A WIT, or `@file`."""
    workload_key: Path | None = None
    issuer_key: Path | None = None
    subject: str | None = None
    txn_token: str | None = None
    """A Txn-Token, or `@file`."""
    bind_headers: tuple[str, ...] = ()
    """Headers (given with `headers`) the minted WPT binds with `oth`."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the request goes: `scheme://host` + `path` (query included)."""

    scheme: str
    host: str
    path: str

    @property
    def audience(self) -> str:
        """What a WPT for this request names as `aud`: origin and path, no query."""
        return f"{self.scheme}://{self.host}{self.path.partition('?')[0]}"


def parse_target(options: CheckOptions) -> Target:
    if options.url is not None:
        if options.host is not None or options.path is not None:
            raise CheckError("give either --url or --host/--path, not both")
        parts = urlsplit(options.url)
        if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
            raise CheckError(f"--url {options.url!r}: expected https://host[:port]/path?query")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Target(parts.scheme, parts.netloc, path)
    if options.host is None:
        raise CheckError("give the request's target with --url, or --host (and --path)")
    path = options.path or "/"
    if not path.startswith("/"):
        raise CheckError(f"--path {path!r} must start with /")
    return Target(options.scheme, options.host, path)


def parse_header(line: str) -> tuple[str, str]:
    """`Name: value` as a lower-case name (as Envoy reports it) and the trimmed value."""
    name, sep, value = line.partition(":")
    name = name.strip()
    if not sep or HEADER_NAME.fullmatch(name) is None:
        raise CheckError(f"--header {line!r}: expected 'name: value'")
    return name.lower(), value.strip()


def parse_context(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise CheckError(f"--context {item!r}: expected key=value")
    return key, value


def joined_headers(lines: Sequence[str]) -> dict[str, str]:
    """Headers as Envoy's `headers` map carries them: repeats joined with commas."""
    headers: dict[str, str] = {}
    for line in lines:
        name, value = parse_header(line)
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def _read_file(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None


def text_argument(value: str, option: str) -> str:
    """Inline text, or `@path` for the file's stripped content (a token, say)."""
    if not value.startswith("@"):
        return value
    try:
        return _read_file(Path(value[1:]), option).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CheckError(f"{option}: {value[1:]} is not UTF-8 text") from None


def body_argument(value: str) -> bytes:
    """Inline text, or `@path` for the file's exact bytes."""
    if value.startswith("@"):
        return _read_file(Path(value[1:]), "--body")
    return value.encode()


def read_private_jwk(path: Path, option: str) -> dict[str, Any]:
    """A private JWK file, as `wimse-authz keys generate` writes them."""
    try:
        document = json.loads(_read_file(path, option))
    except ValueError:
        raise CheckError(f"{option}: {path} is not a JSON JWK") from None
    if not isinstance(document, dict) or "kty" not in document:
        raise CheckError(f"{option}: {path} is not a JWK")
    if "d" not in document:
        raise CheckError(f"{option}: {path} is a public key; signing needs the private JWK")
    return document


def _credential_headers(
    options: CheckOptions, target: Target, headers: Mapping[str, str]
) -> dict[str, str]:
    """`Workload-Identity-Token`, `Authorization: WPT` and `Txn-Token`, minted as asked."""
    if options.wit is not None and options.issuer_key is not None:
        raise CheckError("give either --wit or --issuer-key (to mint one), not both")
    if options.subject is not None and options.issuer_key is None:
        raise CheckError("--sub names the subject of a WIT minted with --issuer-key")
    if options.workload_key is None:
        if options.issuer_key is not None:
            raise CheckError("minting a WIT with --issuer-key needs --workload-key (and --sub)")
        if options.bind_headers:
            raise CheckError("--bind-header binds a header in a minted WPT: add --workload-key")
    elif options.wit is None and options.issuer_key is None:
        raise CheckError("--workload-key signs a WPT for a WIT: add --wit or --issuer-key")

    minted: dict[str, str] = {}
    txn_token = None
    if options.txn_token is not None:
        txn_token = text_argument(options.txn_token, "--txn-token")
        minted[TXN_TOKEN_HEADER] = txn_token
    workload_key = (
        read_private_jwk(options.workload_key, "--workload-key")
        if options.workload_key is not None
        else None
    )
    wit = None
    if options.wit is not None:
        wit = text_argument(options.wit, "--wit")
    elif options.issuer_key is not None and workload_key is not None:
        if options.subject is None:
            raise CheckError("minting a WIT with --issuer-key needs --sub (its workload id)")
        wit = mint_wit(
            read_private_jwk(options.issuer_key, "--issuer-key"), options.subject, workload_key
        )
    if wit is not None:
        minted[WIT_HEADER] = wit
    if wit is not None and workload_key is not None:
        bound: dict[str, str] = {}
        for name in options.bind_headers:
            key = name.strip().lower()
            if key not in headers:
                raise CheckError(f"--bind-header {name}: no such header given with -H")
            bound[key] = headers[key]
        wpt = mint_wpt(
            workload_key,
            wit,
            target.audience,
            txn_token=txn_token,
            other_tokens=bound or None,
        )
        minted[AUTHORIZATION_HEADER] = f"WPT {wpt}"
    clash = sorted(set(minted) & set(headers))
    if clash:
        raise CheckError(f"-H {clash[0]} is also set from a credential option: give it once")
    return minted


def prepare_check_request(options: CheckOptions) -> CheckRequest:
    """The `CheckRequest` the options describe, with any credentials freshly minted."""
    target = parse_target(options)
    headers = joined_headers(options.headers)
    headers.update(_credential_headers(options, target, headers))
    body = body_argument(options.body) if options.body is not None else b""
    return build_check_request(
        host=target.host,
        path=target.path,
        method=options.method,
        scheme=target.scheme,
        headers=headers,
        body=body.decode("utf-8", "replace"),
        raw_body=body,
        context=dict(parse_context(item) for item in options.context),
        source_principal=options.source_principal,
        destination_principal=options.destination_principal,
        request_id=str(uuid.uuid4()),
    )


# --- sending it ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayAddress:
    """How to reach the gateway: plaintext, or TLS when any TLS setting is given."""

    address: str
    """`host:port` or `unix:/path`, as the gateway's `server.listeners` write it."""
    timeout: float = 5.0
    ca_file: Path | None = None
    """CAs the gateway's certificate must chain to; default with TLS: the system's."""
    cert_file: Path | None = None
    """Our client certificate (PEM, intermediates after it), for a mutual-TLS listener."""
    key_file: Path | None = None
    server_name: str | None = None
    """The name the gateway's certificate must carry, when the address is not it."""

    def __post_init__(self) -> None:
        try:
            # Plaintext to any address is the caller's choice here: the gateway's own
            # listener settings decide what it accepts.
            ListenerConfig(address=self.address, allow_plaintext=True)
        except ValidationError:
            raise CheckError(
                f"--gateway {self.address!r}: expected host:port or unix:/path"
            ) from None
        if self.timeout <= 0:
            raise CheckError("--timeout must be positive")
        if (self.cert_file is None) != (self.key_file is None):
            raise CheckError("--cert-file and --key-file go together")
        if self.tls and self.address.startswith("unix:"):
            raise CheckError("the gateway serves TLS on TCP listeners only, not unix sockets")

    @property
    def tls(self) -> bool:
        return any(
            value is not None
            for value in (self.ca_file, self.cert_file, self.key_file, self.server_name)
        )


def open_channel(gateway: GatewayAddress) -> grpc.Channel:
    """A channel to the gateway; TLS (with our certificate, if given) when asked for."""
    if not gateway.tls:
        return grpc.insecure_channel(gateway.address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read_file(gateway.ca_file, "--ca-file") if gateway.ca_file else None,
        private_key=_read_file(gateway.key_file, "--key-file") if gateway.key_file else None,
        certificate_chain=(
            _read_file(gateway.cert_file, "--cert-file") if gateway.cert_file else None
        ),
    )
    options = []
    if gateway.server_name is not None:
        options.append(("grpc.ssl_target_name_override", gateway.server_name))
    return grpc.secure_channel(gateway.address, credentials, options=options)


def send_check(request: CheckRequest, gateway: GatewayAddress) -> CheckResponse:
    """The gateway's answer; `CheckError` carrying the gRPC status when there is none."""
    with open_channel(gateway) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        try:
            response: CheckResponse = stub.Check(request, timeout=gateway.timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            status = code.name if code is not None else "UNKNOWN"
            raise CheckError(
                f"no answer from {gateway.address} (gRPC status {status}: {exc.details()})"
            ) from None
    return response


# --- reading the answer ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckAnswer:
    allowed: bool
    http_status: int | None
    """The denial's status; None when allowed (the upstream answers)."""
    reason: str | None
    decision_id: str | None
    headers: HeaderList
    """Allowed: set on the upstream request. Denied: sent to the client."""
    headers_to_remove: tuple[str, ...]
    response_headers_to_add: HeaderList
    query_parameters_to_set: HeaderList
    query_parameters_to_remove: tuple[str, ...]
    body: str | None
    """The denial's body; None when allowed."""
    dynamic_metadata: Mapping[str, Any]


def _pairs(options: Any) -> HeaderList:
    return tuple((option.header.key, option.header.value) for option in options)


def answer_from_response(response: CheckResponse) -> CheckAnswer:
    metadata: dict[str, Any] = json_format.MessageToDict(response.dynamic_metadata)
    decision_id = metadata.get("decision_id")
    decision_id = decision_id if isinstance(decision_id, str) else None
    reason = metadata.get("reason")
    if response.status.code == code_pb2.OK:
        ok = response.ok_response
        return CheckAnswer(
            allowed=True,
            http_status=None,
            reason=reason if isinstance(reason, str) else None,
            decision_id=decision_id,
            headers=_pairs(ok.headers),
            headers_to_remove=tuple(ok.headers_to_remove),
            response_headers_to_add=_pairs(ok.response_headers_to_add),
            query_parameters_to_set=tuple((p.key, p.value) for p in ok.query_parameters_to_set),
            query_parameters_to_remove=tuple(ok.query_parameters_to_remove),
            body=None,
            dynamic_metadata=metadata,
        )
    denied = response.denied_response
    headers = _pairs(denied.headers)
    if not isinstance(reason, str):
        reason = next((value for name, value in headers if name.lower() == REASON_HEADER), None)
    return CheckAnswer(
        allowed=False,
        # Envoy answers 403 when a denial names no status.
        http_status=denied.status.code or HTTPStatus.FORBIDDEN.value,
        reason=reason,
        decision_id=decision_id,
        headers=headers,
        headers_to_remove=(),
        response_headers_to_add=(),
        query_parameters_to_set=(),
        query_parameters_to_remove=(),
        body=denied.body,
        dynamic_metadata=metadata,
    )


def answer_json(answer: CheckAnswer) -> dict[str, Any]:
    """The `--json` form: every field, header lists as `[name, value]` pairs."""
    return {
        "allowed": answer.allowed,
        "http_status": answer.http_status,
        "reason": answer.reason,
        "decision_id": answer.decision_id,
        "headers": [list(pair) for pair in answer.headers],
        "headers_to_remove": list(answer.headers_to_remove),
        "response_headers_to_add": [list(pair) for pair in answer.response_headers_to_add],
        "query_parameters_to_set": [list(pair) for pair in answer.query_parameters_to_set],
        "query_parameters_to_remove": list(answer.query_parameters_to_remove),
        "body": answer.body,
        "dynamic_metadata": dict(answer.dynamic_metadata),
    }


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def describe_answer(answer: CheckAnswer) -> str:
    """A few lines for people: the verdict first, then what Envoy is told to do."""
    verdict = "ALLOW" if answer.allowed else f"DENY {_status_line(answer.http_status or 403)}"
    lines = [verdict]
    if answer.reason:
        lines.append(f"reason: {answer.reason}")
    if answer.decision_id:
        lines.append(f"decision_id: {answer.decision_id}")
    where = "headers set upstream" if answer.allowed else "response headers"
    for title, pairs in (
        (where, answer.headers),
        ("response headers added", answer.response_headers_to_add),
        ("query parameters set", answer.query_parameters_to_set),
    ):
        if pairs:
            lines.append(f"{title}:")
            lines.extend(f"  {name}: {value}" for name, value in pairs)
    if answer.headers_to_remove:
        lines.append(f"headers removed upstream: {', '.join(answer.headers_to_remove)}")
    if answer.query_parameters_to_remove:
        lines.append(f"query parameters removed: {', '.join(answer.query_parameters_to_remove)}")
    if answer.body:
        lines.append(f"body: {answer.body}")
    if answer.dynamic_metadata:
        lines.append(f"dynamic metadata: {json.dumps(answer.dynamic_metadata, sort_keys=True)}")
    return "\n".join(lines)


def logged_decision(path: Path, decision_id: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The decision log line (`decision_log.output`) of `decision_id`, waited for up to
    `timeout` seconds (the gateway writes its log from a background thread); None if it
    never appears."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with path.open(encoding="utf-8") as log:
                for line in log:
                    if decision_id in line:
                        record = _json_line(line)
                        if record is not None and record.get("decision_id") == decision_id:
                            return record
        except (OSError, UnicodeDecodeError):
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _json_line(line: str) -> dict[str, Any] | None:
    """The line's JSON object; None for anything else (a line still being written)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def describe_logged_decision(record: dict[str, Any] | None, path: Path) -> str:
    """What `check --explain` adds: the policy's reasons and the input the gateway built."""
    if record is None:
        return f"explain: no line for this decision in {path} (is it decision_log.output?)"
    lines = [f"explain (from {path}):"]
    reasons = record.get("policy_reasons") or []
    lines.append(f"  policy reasons: {', '.join(reasons) if reasons else '(none)'}")
    if "input" in record:
        lines.append("  input the gateway built (credentials hashed):")
        text = json.dumps(record["input"], indent=2, sort_keys=True)
        lines.extend(f"    {line}" for line in text.splitlines())
    else:
        lines.append("  (no input in the log: set decision_log.include_input: true)")
    return "\n".join(lines)

"""Decision logs: one JSON line per decision, written off the event loop.

The serving path only builds a `DecisionRecord` and hands it to a bounded queue; a writer
thread serialises, masks and writes. When the writer falls behind, records are dropped and
counted instead of slowing checks down. Nothing that reaches a line is a token, proof or
signature: credentials appear only as `sha256:` prefixes of their header values, and an
included policy input has every credential-carrying header replaced the same way (in the
`headers` map and in Envoy's raw `headerMap` alike) before the operator's own JSON-pointer
masks apply.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import queue
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("authz.decision_log")

MASKED = "**masked**"
_HEADERS_POINTER = ("attributes", "request", "http", "headers")
_HEADER_MAP_POINTER = ("attributes", "request", "http", "headerMap", "headers")
_RAW_BODY_POINTER = ("attributes", "request", "http", "rawBody")


def short_hash(value: str) -> str:
    """A value's SHA-256 prefix: enough to correlate log lines, never enough to replay."""
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:12]


@dataclass(slots=True)
class DecisionRecord:
    """What one decision log line says. Built on the serving path; serialised elsewhere."""

    decision_id: str
    time: float
    """Wall-clock time the check arrived (seconds since the epoch)."""
    result: str = "error"
    """`allow`, `deny` or `error` (as answered to Envoy)."""
    status: int = 0
    """HTTP status Envoy answers with; 200 for an allow."""
    reason: str = ""
    direction: str = "inbound"
    """`inbound` (a caller verified) or `outbound` (the local workload's request signed)."""
    method: str | None = None
    path: str | None = None
    """The request path without its query (a query may carry secrets)."""
    service: str | None = None
    route: Mapping[str, str] = field(default_factory=dict)
    """The route's `context_extensions`."""
    caller: str | None = None
    authenticated_by: str | None = None
    chain: tuple[str, ...] = ()
    txn: str | None = None
    txn_sub: str | None = None
    policy_reasons: tuple[str, ...] = ()
    dry_run: bool = False
    cached: bool = False
    policy_revision: str | None = None
    trust_revision: str | None = None
    credentials: Mapping[str, str] = field(default_factory=dict)
    """Credential header → `sha256:` prefix of its value."""
    verify_us: int | None = None
    evaluate_us: int | None = None
    total_us: int | None = None
    input: Mapping[str, Any] | None = None


class DecisionLog:
    """Where `DecisionRecord`s go. The base class drops them (decision logs off)."""

    def write(self, record: DecisionRecord) -> None:
        """Hand a record over; never blocks, never raises."""

    @property
    def enabled(self) -> bool:
        return False

    @property
    def wants_input(self) -> bool:
        return False

    def close(self) -> None:
        """Write what is queued, then stop."""


@dataclass(frozen=True, slots=True)
class InputRedaction:
    """How an included policy input is made safe to log."""

    credential_headers: frozenset[str]
    """Header names whose values are replaced by a `sha256:` prefix, always."""
    masks: tuple[tuple[str, ...], ...] = ()
    """Parsed JSON pointers whose values are replaced by `**masked**`."""

    @classmethod
    def build(cls, credential_headers: Iterable[str], pointers: Iterable[str]) -> InputRedaction:
        return cls(frozenset(credential_headers), tuple(parse_pointer(p) for p in pointers))

    def apply(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """A redacted copy: credential headers hashed by name in both shapes Envoy sends
        headers in (the `headers` map, and `headerMap` whose `rawValue`s are base64 under
        `encode_raw_headers`), anything shaped like a JWT elsewhere (a token nested in
        another token's claims, a bearer token in a cookie, in base64 members too) replaced
        by its hash, then the operator's masks applied."""
        redacted = dict(document)
        headers = _get(redacted, _HEADERS_POINTER)
        if isinstance(headers, Mapping):
            redacted = _replaced(redacted, _HEADERS_POINTER, self._hashed_map(headers))
        entries = _get(redacted, _HEADER_MAP_POINTER)
        if isinstance(entries, list):
            redacted = _replaced(redacted, _HEADER_MAP_POINTER, self._hashed_entries(entries))
        raw_body = _get(redacted, _RAW_BODY_POINTER)
        if isinstance(raw_body, str):
            redacted = _replaced(redacted, _RAW_BODY_POINTER, _without_jwts_base64(raw_body))
        redacted = dict(_without_jwts(redacted))
        for pointer in self.masks:
            if _get(redacted, pointer) is not _ABSENT:
                redacted = _replaced(redacted, pointer, MASKED)
        return redacted

    def _hashed_map(self, headers: Mapping[str, Any]) -> dict[str, Any]:
        return {
            name: short_hash(value)
            if name.lower() in self.credential_headers and isinstance(value, str)
            else value
            for name, value in headers.items()
        }

    def _hashed_entries(self, entries: list[Any]) -> list[Any]:
        """`headerMap.headers`: `{key, value}` or `{key, rawValue}` (base64) entries."""
        safe: list[Any] = []
        for entry in entries:
            if not isinstance(entry, Mapping) or not isinstance(key := entry.get("key"), str):
                safe.append(entry)
                continue
            copy = dict(entry)
            credential = key.lower() in self.credential_headers
            if isinstance(value := entry.get("value"), str) and credential:
                copy["value"] = short_hash(value)
            if isinstance(raw := entry.get("rawValue"), str):
                copy["rawValue"] = (
                    short_hash(_decoded(raw)) if credential else _without_jwts_base64(raw)
                )
            safe.append(copy)
        return safe


def _decoded(raw_value: str) -> str:
    """A base64 member as the text it encodes; anything that is not base64, as it is."""
    try:
        return base64.b64decode(raw_value, validate=True).decode("utf-8", "replace")
    except ValueError:
        return raw_value


def _without_jwts_base64(raw_value: str) -> str:
    """A base64 member (`rawValue`, `rawBody`) with any JWT in what it encodes hashed: the
    text scrubbed and re-encoded when it held one, else unchanged."""
    text = _decoded(raw_value)
    scrubbed = _without_jwts(text)
    if scrubbed == text:
        return raw_value
    return base64.b64encode(scrubbed.encode("utf-8")).decode("ascii")


# Runs of the characters a compact JWS/JWE is made of. A JWT inside a run starts at an `eyJ`
# (base64url of `{"`) with at least 4 more characters before the next dot, has a non-empty
# segment after that dot and at least one more dot, and is taken to the end of the run.
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_.-]+")


def _without_jwts(node: Any) -> Any:
    if isinstance(node, str):
        return _TOKEN_RUN.sub(_hash_jwt_in_run, node) if "eyJ" in node else node
    if isinstance(node, Mapping):
        return {key: _without_jwts(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_without_jwts(value) for value in node]
    return node


def _hash_jwt_in_run(match: re.Match[str]) -> str:
    """The run with the JWT it holds (from its `eyJ` to the run's end) hashed.

    Linear in the run's length: each segment is searched once, for its leftmost `eyJ` (a
    later one leaves less room before the dot). A backtracking regex for the same shape was
    quadratic on `eyJeyJeyJ...` without dots and, holding the GIL, stalled every check.
    """
    run = match.group(0)
    segments = run.split(".")
    offset = 0
    for index in range(len(segments) - 2):
        segment = segments[index]
        start = segment.find("eyJ")
        if start >= 0 and len(segment) - start >= 7 and segments[index + 1]:
            return run[: offset + start] + short_hash(run[offset + start :])
        offset += len(segment) + 1
    return run


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """RFC 6901: `/a/b~1c` → ("a", "b/c"); the empty pointer is refused (masks everything)."""
    if not pointer.startswith("/"):
        raise ValueError(f"{pointer!r} is not a JSON pointer")
    return tuple(part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/"))


_ABSENT = object()


def _get(document: Any, path: tuple[str, ...]) -> Any:
    node = document
    for part in path:
        if isinstance(node, Mapping):
            node = node.get(part, _ABSENT)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _ABSENT
        if node is _ABSENT:
            return _ABSENT
    return node


def _replaced(node: Any, path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, Mapping):
        copy = dict(node)
        copy[head] = _replaced(node[head], rest, value)
        return copy
    items = list(node)
    items[int(head)] = _replaced(items[int(head)], rest, value)
    return items


def record_line(record: DecisionRecord, redaction: InputRedaction | None) -> str:
    """The JSON line for a record (no trailing newline)."""
    line: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.time, UTC).isoformat(timespec="microseconds"),
        "decision_id": record.decision_id,
        "result": record.result,
        "status": record.status,
        "reason": record.reason,
        "direction": record.direction,
        "request": {"method": record.method, "path": record.path},
        "service": record.service,
        "route": dict(record.route),
        "caller": {"id": record.caller, "authenticated_by": record.authenticated_by}
        if record.caller is not None
        else None,
        "chain": list(record.chain),
        "txn": {"id": record.txn, "sub": record.txn_sub} if record.txn is not None else None,
        "policy_reasons": list(record.policy_reasons),
        "dry_run": record.dry_run,
        "cached": record.cached,
        "revision": {"policy": record.policy_revision, "trust": record.trust_revision},
        "credentials": dict(record.credentials),
        "timings_us": {
            "verify": record.verify_us,
            "evaluate": record.evaluate_us,
            "total": record.total_us,
        },
    }
    if record.input is not None and redaction is not None:
        line["input"] = redaction.apply(record.input)
    return json.dumps(line, separators=(",", ":"), default=str, ensure_ascii=False)


_STOP = object()


class JsonLinesDecisionLog(DecisionLog):
    """Writes one line per record to a stream, from its own thread."""

    def __init__(
        self,
        stream: IO[str],
        *,
        queue_entries: int,
        redaction: InputRedaction | None = None,
        on_drop: Callable[[], None] | None = None,
        owns_stream: bool = False,
    ) -> None:
        self._stream = stream
        self._owns_stream = owns_stream
        self._redaction = redaction
        self._on_drop = on_drop
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_entries)
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    @property
    def enabled(self) -> bool:
        return True

    @property
    def wants_input(self) -> bool:
        return self._redaction is not None

    def queued(self) -> int:
        return self._queue.qsize()

    def write(self, record: DecisionRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            if self._on_drop is not None:
                self._on_drop()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            # Drain what else is waiting so one flush covers many lines under load.
            while len(batch) < 512:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = False
            lines = []
            for entry in batch:
                if entry is _STOP:
                    stop = True
                elif isinstance(entry, DecisionRecord):
                    try:
                        lines.append(record_line(entry, self._redaction))
                    except Exception:
                        log.exception("could not serialise decision %s", entry.decision_id)
            if lines:
                try:
                    self._stream.write("\n".join(lines) + "\n")
                    self._stream.flush()
                except (OSError, ValueError):
                    log.exception("could not write %d decision log lines", len(lines))
            if stop:
                return

    def close(self) -> None:
        try:
            self._queue.put(_STOP, timeout=5)
        except queue.Full:
            log.warning("decision log queue still full at shutdown: lines lost")
            return
        self._thread.join(timeout=10)
        if self._owns_stream:
            self._stream.close()


def open_decision_log(
    output: str | Path,
    *,
    queue_entries: int,
    redaction: InputRedaction | None,
    on_drop: Callable[[], None] | None = None,
) -> DecisionLog:
    """The configured decision log: `none`, `stdout` or a file path (appended to)."""
    if output == "none":
        return DecisionLog()
    if output == "stdout":
        return JsonLinesDecisionLog(
            sys.stdout, queue_entries=queue_entries, redaction=redaction, on_drop=on_drop
        )
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("a", encoding="utf-8")
    return JsonLinesDecisionLog(
        stream, queue_entries=queue_entries, redaction=redaction, on_drop=on_drop, owns_stream=True
    )

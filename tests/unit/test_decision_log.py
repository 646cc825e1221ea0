"""The decision log writer: never blocks the caller, drops and counts when behind, redacts."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.observability.decision_log import (
    DecisionRecord,
    InputRedaction,
    JsonLinesDecisionLog,
    parse_pointer,
    record_line,
    short_hash,
)


class StuckStream(io.StringIO):
    """A stream whose writes wait until released: a full disk, a stalled pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(timeout=10)
        return super().write(text)


def test_a_stalled_writer_never_blocks_checks_and_drops_are_counted() -> None:
    stream = StuckStream()
    dropped: list[int] = []
    log = JsonLinesDecisionLog(stream, queue_entries=4, on_drop=lambda: dropped.append(1))
    started = time.perf_counter()
    for number in range(50):
        log.write(DecisionRecord(f"d{number}", time.time()))
    assert time.perf_counter() - started < 1.0, "write() waited for the stream"
    # One record may be in the writer's hands, four queued: the rest are dropped.
    assert 45 <= len(dropped) <= 46
    stream.release.set()
    log.close()
    written = [json.loads(line)["decision_id"] for line in stream.getvalue().splitlines()]
    assert len(written) == 50 - len(dropped)
    assert written[0] == "d0"


def test_a_line_holds_what_the_record_says() -> None:
    record = DecisionRecord(
        "abc",
        0.0,
        result="deny",
        status=403,
        reason="policy.denied",
        method="GET",
        path="/api/x",
        caller="spiffe://d.example/a",
        authenticated_by="wpt",
        chain=("spiffe://d.example/a",),
        policy_reasons=("no grant",),
        policy_revision="r1",
        trust_revision="t1",
        verify_us=10,
        evaluate_us=20,
        total_us=35,
    )
    line = json.loads(record_line(record, None))
    assert line["time"] == "1970-01-01T00:00:00.000000+00:00"
    assert line["caller"] == {"id": "spiffe://d.example/a", "authenticated_by": "wpt"}
    assert line["revision"] == {"policy": "r1", "trust": "t1"}
    assert line["timings_us"] == {"verify": 10, "evaluate": 20, "total": 35}
    assert line["txn"] is None
    assert "input" not in line


def test_redaction_hashes_credential_headers_and_nested_jwts_then_masks() -> None:
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz"
    document: dict[str, Any] = {
        "attributes": {
            "request": {
                "http": {"headers": {"txn-token": jwt, "cookie": f"session={jwt}; theme=dark"}}
            }
        },
        "wimse": {"txn": {"rctx": {"ear": jwt}}},
        "parsed_body": {"card": "4111", "items": [{"sku": "a/b"}]},
    }
    redaction = InputRedaction.build(
        ["txn-token"], ["/parsed_body/card", "/parsed_body/items/0/sku"]
    )
    safe = redaction.apply(document)
    headers = safe["attributes"]["request"]["http"]["headers"]
    assert headers["txn-token"] == short_hash(jwt)
    assert headers["cookie"] == f"session={short_hash(jwt)}; theme=dark"
    assert safe["wimse"]["txn"]["rctx"]["ear"] == short_hash(jwt)
    assert safe["parsed_body"] == {"card": "**masked**", "items": [{"sku": "**masked**"}]}
    assert document["parsed_body"]["card"] == "4111", "the input itself is left untouched"


def test_redaction_hashes_credential_headers_in_the_raw_header_map_shape() -> None:
    """`encode_raw_headers`: values arrive base64 in `rawValue`, where no JWT shape shows."""
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz"

    def raw(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    entries = [
        {"key": "authorization", "rawValue": raw(f"WPT {jwt}")},
        {"key": "Txn-Token", "value": jwt},
        {"key": "cookie", "rawValue": raw(f"session={jwt}; theme=dark")},
        {"key": "accept", "rawValue": raw("*/*")},
    ]
    document = {"attributes": {"request": {"http": {"headerMap": {"headers": entries}}}}}
    safe = InputRedaction.build(["authorization", "txn-token"], []).apply(document)
    logged = safe["attributes"]["request"]["http"]["headerMap"]["headers"]
    assert logged[0] == {"key": "authorization", "rawValue": short_hash(f"WPT {jwt}")}
    assert logged[1] == {"key": "Txn-Token", "value": short_hash(jwt)}
    assert logged[2] == {"key": "cookie", "rawValue": raw(f"session={short_hash(jwt)}; theme=dark")}
    assert logged[3] == entries[3], "headers without tokens stay as Envoy sent them"
    assert entries[0]["rawValue"] == raw(f"WPT {jwt}"), "the input itself is left untouched"


def test_redaction_hashes_a_jwt_in_the_raw_body() -> None:
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz"
    body = f"grant_type=token-exchange&subject_token={jwt}".encode()
    document = {"attributes": {"request": {"http": {"rawBody": base64.b64encode(body).decode()}}}}
    safe = InputRedaction.build([], []).apply(document)
    logged = base64.b64decode(safe["attributes"]["request"]["http"]["rawBody"]).decode()
    assert logged == f"grant_type=token-exchange&subject_token={short_hash(jwt)}"


# The scrubber's shape, as the backtracking regex it replaced wrote it (quadratic on
# `eyJeyJ...` without dots); short inputs only.
_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]*")


def scrubbed(text: str) -> str:
    document = {"parsed_body": {"note": text}}
    note: str = InputRedaction.build([], []).apply(document)["parsed_body"]["note"]
    return note


@given(st.lists(st.sampled_from(["eyJ", "e", "y", "J", ".", "a", "-", " ", "_", "=", "Zx"])))
def test_the_linear_scrubber_hashes_exactly_what_the_jwt_shape_matches(parts: list[str]) -> None:
    text = "".join(parts)
    assert scrubbed(text) == _JWT_SHAPE.sub(lambda match: short_hash(match.group(0)), text)


def test_masks_of_absent_members_change_nothing() -> None:
    redaction = InputRedaction.build([], ["/parsed_body/card", "/nope/0"])
    assert redaction.apply({"parsed_body": None}) == {"parsed_body": None}


@pytest.mark.parametrize(
    ("pointer", "parts"),
    [("/a/b", ("a", "b")), ("/a~1b/c~0d", ("a/b", "c~d")), ("/", ("",))],
)
def test_json_pointers_follow_rfc_6901(pointer: str, parts: tuple[str, ...]) -> None:
    assert parse_pointer(pointer) == parts


def test_check_explain_reads_past_a_line_still_being_written(tmp_path: Any) -> None:
    """`check --explain` polls the log the writer thread appends to: a half-written line
    naming the decision is skipped, and the complete line found when it is there."""
    from authz.devtools.check import logged_decision

    decision_id = "d" * 32
    path = tmp_path / "decisions.jsonl"
    path.write_text(f'{{"decision_id": "{decision_id}", "resu\n[1, "{decision_id}"]\n')
    assert logged_decision(path, decision_id, timeout=0.1) is None
    with path.open("a") as log:
        log.write(json.dumps({"decision_id": decision_id, "result": "deny"}) + "\n")
    assert logged_decision(path, decision_id, timeout=1.0) == {
        "decision_id": decision_id,
        "result": "deny",
    }

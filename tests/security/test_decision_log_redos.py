"""One request must not stall every check through the decision log's token scrubber (ReDoS).

With `decision_log.include_input`, every string of the logged input is scrubbed of anything
shaped like a JWT. The scrubber was a backtracking regex, quadratic on `eyJeyJeyJ...`
without dots; it runs on the writer thread, but holding the GIL, so one 60 KB header froze
the event loop for seconds and, through Envoy's 1 s ext_authz timeout, turned concurrent
healthy requests into 503s.

The pipeline runs in a child process so that a stalled scrubber cannot also stall the test
(it holds the GIL): the child makes the two checks, closes the decision log (which waits
for the writer) and exits. The deadline detects a hang, it times nothing: scrubbing the
480 KB header takes about a millisecond now and took over a minute before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HANG_DEADLINE_SECONDS = 60

_CHILD = """
import sys
from pathlib import Path

from authz.devtools.stack import ensure_identities
from tests.security.forgery import Forge
from tests.support import GatewayHarness, expect_allowed

directory, log = Path(sys.argv[1]), Path(sys.argv[2])
harness = GatewayHarness(directory, ensure_identities(directory)).rebuild(
    decision_log={"output": str(log), "include_input": True}
)
forge = Forge(harness)
expect_allowed(harness.check_path("/api/hello", forge.headers() | {"x-note": "eyJ" * 160_000}))
expect_allowed(harness.check_path("/api/hello", forge.headers()))
harness.gateway.runtime.close()
print(len(log.read_text(encoding="utf-8").splitlines()))
"""


def test_a_token_shaped_header_without_dots_is_scrubbed_without_stalling(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    try:
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(tmp_path / "identities"), str(log)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=HANG_DEADLINE_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the decision log writer was still scrubbing after {HANG_DEADLINE_SECONDS} s")
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "2"
    first = json.loads(log.read_text(encoding="utf-8").splitlines()[0])
    # Logged, and kept as it is: without dots it is no JWT.
    assert first["input"]["attributes"]["request"]["http"]["headers"]["x-note"] == "eyJ" * 160_000

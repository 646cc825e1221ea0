"""Policy: the input document, engines, decisions, loading and Rego tests."""

import os

# regorus attaches a captured backtrace to every error when RUST_BACKTRACE is set; that is
# slow and floods logs. Library backtraces are switched off here, before any module of this
# package can import regorus.
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")

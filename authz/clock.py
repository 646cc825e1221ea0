"""The verifiers' notion of now, injectable so published examples verify "as of" their time."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Returns the current time as Unix seconds."""

system_clock: Clock = time.time


def fixed_clock(at: float) -> Clock:
    """A clock frozen at `at`, for tests and for replaying published examples."""
    return lambda: at

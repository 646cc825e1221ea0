"""The one interface a policy backend implements: evaluate the decision rule for an input.

The embedded regorus engine is the default; a remote OPA server (`remote.py`) fits the same
interface. A backend returns the raw value of the decision rule (None when undefined) and
raises `PolicyEngineError` for anything that prevents a decision, which the gateway answers
as unavailable (503), never as a denial.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from authz.errors import UnavailableError
from authz.reasons import Reason


class PolicyEngineError(UnavailableError):
    """The engine could not decide; `reason` says which kind of failure it was."""

    default_reason: ClassVar[Reason] = Reason.POLICY_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(self.default_reason, message)


class PolicyBackendUnavailable(PolicyEngineError):
    """A remote policy backend could not be asked, or gave no usable answer in time."""

    default_reason = Reason.POLICY_BACKEND_UNAVAILABLE


class PolicyEngine(Protocol):
    @property
    def revision(self) -> str:
        """Identifies the policy set being served (for logs and decision metadata)."""
        ...

    async def evaluate(self, input_document: dict[str, Any]) -> object:
        """The decision rule's value for `input_document`, or None when it is undefined."""
        ...

"""The remote policy backend: an OPA server asked through its Data API.

Each decision is one `POST /v1/data/<rule path>` with body `{"input": <document>}`. OPA
answers 200 with `{"result": <value>}`, or 200 without `result` when the rule is undefined
(returned as None, as the embedded engine does). Anything else (no connection, no complete
answer within `timeout_seconds`, a status other than 200, a body that is not a JSON object
or is larger than `MAX_RESPONSE_BYTES`) raises `PolicyBackendUnavailable`: the gateway
answers 503, never a denial. Error messages carry the status, OPA's error code or the
transport failure's type, and never anything from the input, which holds credentials.

Requests go through `opa-python-client`'s `AsyncOpaClient`: its one aiohttp session keeps
connections alive and carries the bearer token and the timeout. Its public `query_rule`
does not fit a fail-closed hot path (it reads a body of any size, discards OPA's error code
in `raise_for_status`, and refuses bodies not labelled `application/json`), so the engine
sends through the client's `_request` and reads the body itself, bounded. The client's
retries are off (`retries=0`): its backoff would outlast the decision's timeout.
"""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opa_client.opa_async import AsyncOpaClient

from authz import strict_json
from authz.config import RemoteOpaConfig
from authz.errors import ConfigError
from authz.policy.engine import PolicyBackendUnavailable, PolicyEngineError

MAX_RESPONSE_BYTES = 1024 * 1024
"""Largest answer accepted from OPA (after decompression); a decision is far smaller."""

# An error body is read only to name OPA's error code in the log, and so that the
# connection can go back to the pool; OPA's error objects are a few hundred bytes.
_ERROR_BODY_BYTES = 64 * 1024
_OPA_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_RULE_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JSON_CONTENT = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class _Server:
    host: str
    """As written in a URL: an IPv6 literal in brackets."""
    port: int
    tls: bool

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


def _server(url: str) -> _Server:
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ConfigError("policy.opa.url: put credentials in policy.opa.token, not in the URL")
    if parts.query or parts.fragment:
        raise ConfigError("policy.opa.url: expected http(s)://host:port with no query")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("policy.opa.url: the port is not a valid port number") from None
    host = parts.hostname
    if not host or parts.scheme not in ("http", "https"):
        raise ConfigError("policy.opa.url: expected http(s)://host:port")
    tls = parts.scheme == "https"
    return _Server(f"[{host}]" if ":" in host else host, port or (443 if tls else 80), tls)


def _data_path(decision_rule: str) -> str:
    """`data.envoy.authz.allow` or `envoy/authz/allow` → `envoy/authz/allow` (read the same
    way as `policy.decision`)."""
    segments = decision_rule.removeprefix("data.").replace("/", ".").strip(".").split(".")
    if not all(_RULE_SEGMENT.fullmatch(segment) for segment in segments):
        raise ConfigError(f"decision rule {decision_rule!r} is not a path like envoy/authz/allow")
    return "/".join(segments)


class RemoteOpaEngine:
    """Evaluates one decision rule on an OPA server (`PolicyEngine`).

    May be built before the event loop runs: the HTTP session opens on the first evaluation
    and serves that event loop only. `close()` releases its connections; evaluations after
    it raise `PolicyBackendUnavailable`.
    """

    def __init__(self, config: RemoteOpaConfig, decision_rule: str) -> None:
        self._server = _server(config.url)
        self._timeout = config.timeout_seconds
        self._token = config.token
        scheme = "https" if self._server.tls else "http"
        self._url = f"{scheme}://{self._server.authority}/v1/data/{_data_path(decision_rule)}"
        self._lock = asyncio.Lock()
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def revision(self) -> str:
        # The server's bundle revision can change between any two decisions; name the
        # server instead of reporting a revision that may already be stale.
        return f"opa:{self._server.authority}"

    async def evaluate(self, input_document: dict[str, Any]) -> object:
        try:
            body = json.dumps(
                {"input": input_document}, allow_nan=False, separators=(",", ":")
            ).encode()
        except (TypeError, ValueError) as exc:
            raise PolicyEngineError(f"input is not JSON: {type(exc).__name__}") from None
        client = await self._session_client()
        try:
            async with client._request(
                "POST", self._url, data=body, headers=_JSON_CONTENT
            ) as response:
                if response.status != 200:
                    code = await _error_code(response)
                    raise PolicyBackendUnavailable(f"OPA answered {response.status}{code}")
                payload = await _read_bounded(response, MAX_RESPONSE_BYTES)
        except TimeoutError:
            raise PolicyBackendUnavailable(f"OPA did not answer within {self._timeout}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise PolicyBackendUnavailable(f"request to OPA failed: {type(exc).__name__}") from None
        except RuntimeError:
            # aiohttp refuses a request on a session closed while this one was starting.
            if not self._closed:
                raise
            raise PolicyBackendUnavailable("the OPA engine is closed") from None
        return _result(payload)

    async def close(self) -> None:
        """Close the session and its pooled connections. Safe to call more than once."""
        async with self._lock:
            self._closed = True
            stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _session_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        async with self._lock:
            if self._closed:
                raise PolicyBackendUnavailable("the OPA engine is closed")
            if self._client is None:
                stack = AsyncExitStack()
                self._client = await stack.enter_async_context(
                    AsyncOpaClient(
                        host=self._server.host,
                        port=self._server.port,
                        ssl=self._server.tls,
                        token=self._token,
                        retries=0,
                        timeout=self._timeout,
                    )
                )
                self._stack, self._loop = stack, loop
            elif self._loop is not loop:
                raise PolicyBackendUnavailable("the OPA engine serves another event loop")
            return self._client


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > limit:
        response.close()
        raise PolicyBackendUnavailable(f"OPA's answer is larger than {limit} bytes")
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > limit:
            # Closing drops the connection instead of draining the rest into the pool.
            response.close()
            raise PolicyBackendUnavailable(f"OPA's answer is larger than {limit} bytes")
    return bytes(body)


async def _error_code(response: aiohttp.ClientResponse) -> str:
    """` (code)` from OPA's `{"code", "message"}` error body, or "". The message is left
    out: it may quote the input."""
    try:
        error = strict_json.loads((await _read_bounded(response, _ERROR_BODY_BYTES)).decode())
    except (PolicyBackendUnavailable, ValueError, RecursionError):
        return ""
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and _OPA_ERROR_CODE.fullmatch(code):
        return f" ({code})"
    return ""


def _result(payload: bytes) -> object:
    try:
        answer = strict_json.loads(payload.decode())
    except (ValueError, RecursionError):
        raise PolicyBackendUnavailable("OPA answered 200 with a body that is not JSON") from None
    if not isinstance(answer, dict):
        raise PolicyBackendUnavailable("OPA answered 200 with JSON that is not an object")
    return answer.get("result")

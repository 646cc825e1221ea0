"""Fetching bundles over HTTP(S) from a real aiohttp server on 127.0.0.1, and from files."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from authz.config import BundleConfig
from authz.devtools.bundle import build_bundle
from authz.errors import ConfigError
from authz.policy.bundle import BundleError, parse_bundle
from authz.policy.bundle_fetch import (
    BundleFetcher,
    BundleFetchError,
    FetchResult,
    display_url,
    read_bundle_file,
)
from tests.key_server import https_context

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class BundleServer:
    """A bundle server: serves `body` with `etag`, honouring `If-None-Match`."""

    body: bytes = b"bundle-one"
    etag: str = '"v1"'
    port: int = 0
    scheme: str = "http"
    seen_if_none_match: list[str | None] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/bundles/bundle.tar.gz") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"


SERVER = web.AppKey("server", BundleServer)


async def serve_bundle(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER]
    match = request.headers.get("If-None-Match")
    server.seen_if_none_match.append(match)
    if match == server.etag:
        return web.Response(status=304, headers={"ETag": server.etag})
    return web.Response(body=server.body, headers={"ETag": server.etag})


@asynccontextmanager
async def bundle_server(
    handler: Handler = serve_bundle, tls: ssl.SSLContext | None = None
) -> AsyncIterator[BundleServer]:
    server = BundleServer(scheme="https" if tls else "http")
    app = web.Application()
    app[SERVER] = server
    app.router.add_get("/{path:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


def config_for(url: str, **settings: Any) -> BundleConfig:
    return BundleConfig(url=url, **{"timeout_seconds": 2.0, **settings})


async def fetch_once(server: BundleServer, **settings: Any) -> FetchResult:
    fetcher = BundleFetcher(config_for(server.url(), **settings))
    try:
        return await fetcher.fetch()
    finally:
        await fetcher.close()


async def fetch_error(handler: Handler, **settings: Any) -> BundleFetchError:
    async with bundle_server(handler) as server:
        with pytest.raises(BundleFetchError) as caught:
            await fetch_once(server, **settings)
    return caught.value


def status(code: int) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, text="nope")

    return handle


# --- ETags ---------------------------------------------------------------------------------


def test_first_fetch_returns_bytes_and_etag_then_304_on_the_same_etag() -> None:
    async def scenario() -> tuple[FetchResult, FetchResult, list[str | None]]:
        async with bundle_server() as server:
            fetcher = BundleFetcher(config_for(server.url()))
            try:
                return await fetcher.fetch(), await fetcher.fetch(), server.seen_if_none_match
            finally:
                await fetcher.close()

    first, second, seen = asyncio.run(scenario())
    assert first == FetchResult(b"bundle-one", '"v1"')
    assert not first.not_modified
    assert second.not_modified
    assert second.etag == '"v1"'
    assert seen == [None, '"v1"']


def test_changed_bundle_is_fetched_with_its_new_etag() -> None:
    async def scenario() -> list[FetchResult]:
        async with bundle_server() as server:
            fetcher = BundleFetcher(config_for(server.url()))
            try:
                results = [await fetcher.fetch()]
                server.body, server.etag = b"bundle-two", '"v2"'
                results += [await fetcher.fetch(), await fetcher.fetch()]
                return results
            finally:
                await fetcher.close()

    first, changed, again = asyncio.run(scenario())
    assert first.data == b"bundle-one"
    assert changed == FetchResult(b"bundle-two", '"v2"')
    assert again.not_modified


def test_server_without_etags_is_fetched_in_full_every_time() -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        assert "If-None-Match" not in request.headers
        return web.Response(body=b"no-etag")

    async def scenario() -> list[FetchResult]:
        async with bundle_server(handle) as server:
            fetcher = BundleFetcher(config_for(server.url()))
            try:
                return [await fetcher.fetch(), await fetcher.fetch()]
            finally:
                await fetcher.close()

    assert asyncio.run(scenario()) == [FetchResult(b"no-etag", None)] * 2


def test_304_to_a_request_without_an_etag_is_an_error() -> None:
    error = asyncio.run(fetch_error(status(304)))
    assert error.status == 304
    assert "without an ETag" in str(error)


def test_fetched_bundle_parses(tmp_path: Path) -> None:
    (tmp_path / "a.rego").write_text("package a\n\nallow := true\n")
    data = build_bundle(tmp_path, revision="r9")

    async def scenario() -> FetchResult:
        async with bundle_server() as server:
            server.body = data
            return await fetch_once(server)

    fetched = asyncio.run(scenario()).data
    assert fetched is not None
    assert parse_bundle(fetched, "bundle url", max_bytes=1 << 20, verifier=None).revision == "r9"


# --- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [404, 500, 503, 302])
def test_status_other_than_200_or_304_is_an_error_with_the_status(code: int) -> None:
    error = asyncio.run(fetch_error(status(code)))
    assert error.status == code
    assert f"answered {code}" in str(error)
    assert isinstance(error, ConfigError)  # a reload keeps the last good policy


def test_slow_server_times_out_within_the_timeout() -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(request.app[SERVER].release.wait(), 5)
        return web.Response(body=b"late")

    started = time.monotonic()
    error = asyncio.run(fetch_error(handle, timeout_seconds=0.2))
    assert time.monotonic() - started < 2.0
    assert "no complete answer within 0.2s" in str(error)


def test_body_that_stalls_after_the_headers_times_out() -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"partial")
        await asyncio.wait_for(request.app[SERVER].release.wait(), 5)
        return response

    started = time.monotonic()
    error = asyncio.run(fetch_error(handle, timeout_seconds=0.2))
    assert time.monotonic() - started < 2.0
    assert "within 0.2s" in str(error)


def test_body_with_content_length_over_max_bytes_is_refused_before_reading() -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * 5000)

    error = asyncio.run(fetch_error(handle, max_bytes=4096))
    assert "larger than max_bytes (4096)" in str(error)


def test_streamed_body_over_max_bytes_is_refused_without_reading_it_all() -> None:
    sent: list[int] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length
        await response.prepare(request)
        try:
            for _ in range(2000):
                await response.write(b"x" * 65536)
                sent.append(1)
        except (ConnectionError, RuntimeError):
            pass
        return response

    error = asyncio.run(fetch_error(handle, max_bytes=100_000))
    assert "larger than max_bytes (100000)" in str(error)
    assert len(sent) < 2000  # the client hung up long before 128 MiB


def test_content_encoding_is_not_undone_so_the_limit_counts_wire_bytes() -> None:
    wire = gzip.compress(b"y" * 50_000)

    async def handle(request: web.Request) -> web.StreamResponse:
        assert request.headers["Accept-Encoding"] == "identity"
        return web.Response(body=wire, headers={"Content-Encoding": "gzip"})

    async def scenario() -> FetchResult:
        async with bundle_server(handle) as server:
            return await fetch_once(server, max_bytes=10_000)

    assert asyncio.run(scenario()).data == wire


def test_closed_port_is_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def scenario() -> None:
        fetcher = BundleFetcher(config_for(f"http://127.0.0.1:{port}/b.tar.gz"))
        try:
            await fetcher.fetch()
        finally:
            await fetcher.close()

    with pytest.raises(BundleFetchError, match="cannot connect") as caught:
        asyncio.run(scenario())
    assert caught.value.status is None


def test_errors_name_the_url_without_credentials_or_query() -> None:
    async def scenario() -> BundleFetchError:
        async with bundle_server(status(404)) as server:
            url = f"http://user:s3cret@127.0.0.1:{server.port}/b.tar.gz?token=t0ken#frag"
            fetcher = BundleFetcher(config_for(url))
            try:
                with pytest.raises(BundleFetchError) as caught:
                    await fetcher.fetch()
                return caught.value
            finally:
                await fetcher.close()

    message = str(asyncio.run(scenario()))
    assert "http://127.0.0.1:" in message
    assert "/b.tar.gz: answered 404" in message
    assert "s3cret" not in message
    assert "t0ken" not in message


def test_display_url_keeps_ipv6_brackets() -> None:
    assert display_url("https://u:p@[::1]:8443/b.tar.gz?x=1") == "https://[::1]:8443/b.tar.gz"


def test_session_is_created_lazily_inside_the_running_loop() -> None:
    fetcher = BundleFetcher(config_for("http://127.0.0.1:1/b.tar.gz"))
    assert fetcher._session is None  # no loop needed to construct it
    asyncio.run(fetcher.close())


# --- TLS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    server_context: ssl.SSLContext


def make_pki(directory: Path) -> Pki:
    """A test CA and a server certificate for 127.0.0.1 issued by it."""
    ca_file, context = https_context(directory)
    return Pki(ca_file, context)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_https_server_is_trusted_through_ca_file(pki: Pki) -> None:
    async def scenario() -> FetchResult:
        async with bundle_server(tls=pki.server_context) as server:
            return await fetch_once(server, ca_file=pki.ca_file)

    assert asyncio.run(scenario()) == FetchResult(b"bundle-one", '"v1"')


def test_https_server_outside_the_trusted_cas_is_refused(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path)

    async def scenario(ca_file: Path | None) -> BundleFetchError:
        async with bundle_server(tls=pki.server_context) as server:
            with pytest.raises(BundleFetchError) as caught:
                await fetch_once(server, ca_file=ca_file)
            return caught.value

    for ca_file in (None, other.ca_file):  # the system's CAs, then an unrelated CA
        assert "TLS certificate not trusted" in str(asyncio.run(scenario(ca_file)))


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_file"):
        BundleFetcher(config_for("https://127.0.0.1:1/b", ca_file=tmp_path / "missing.pem"))


def test_ca_file_with_a_plain_http_url_is_a_config_error(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="not https"):
        BundleFetcher(config_for("http://127.0.0.1:1/b", ca_file=pki.ca_file))


# --- files ---------------------------------------------------------------------------------


def test_bundle_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar.gz"
    path.write_bytes(b"z" * 100)
    assert read_bundle_file(path, max_bytes=100) == b"z" * 100


def test_bundle_file_over_max_bytes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar.gz"
    path.write_bytes(b"z" * 101)
    with pytest.raises(BundleError, match="larger than 100 bytes"):
        read_bundle_file(path, max_bytes=100)


def test_missing_bundle_file_is_refused_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"missing\.tar\.gz: cannot read"):
        read_bundle_file(tmp_path / "missing.tar.gz", max_bytes=100)

"""TLS for https backends: the context built from ``server.tls`` and real handshakes with a local CA."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trustme

from pfxhttp.backend.httpmsg import PreparedRequest, Target, prepare_request
from pfxhttp.backend.pool import HttpClient
from pfxhttp.backend.tlsctx import build_ssl_context
from pfxhttp.config.model import HttpClientConfig, TlsConfig
from pfxhttp.errors import BackendTransportError, ConfigError
from tests.httpd_scripted import ScriptedServer, scripted_server, serve_forever


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    ca_file: str
    client_cert: str  # certificate chain PEM
    client_key: str

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        if require_client_cert:
            self.ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    client = ca.issue_cert("client.pfxhttp.test")
    client.cert_chain_pems[0].write_to_path(str(root / "client.pem"))
    client.private_key_pem.write_to_path(str(root / "client.key"))
    return Pki(ca, str(root / "ca.pem"), str(root / "client.pem"), str(root / "client.key"))


def post(server: ScriptedServer, host: str = "127.0.0.1") -> PreparedRequest:
    return prepare_request("POST", Target.parse(server.url("/", host=host)), [], user_agent="pfxhttp/test")


def client(tls: TlsConfig) -> HttpClient:
    return HttpClient(HttpClientConfig(timeout=3.0), tls)


async def test_verified_with_root_ca_and_keep_alive(pki: Pki) -> None:
    with trio.fail_after(5):
        async with (
            scripted_server(serve_forever, ssl_context=pki.server_context()) as server,
            client(TlsConfig(enabled=True, root_ca=pki.ca_file)) as http,
        ):
            for _ in range(3):
                assert (await http.request(post(server), b"{}")).body == b"ok"
    assert server.connections == 1
    assert server.alpn == ["http/1.1"]  # offered alone, so an h2-first server stays on HTTP/1.1


async def test_unknown_ca_fails_as_transport_error(pki: Pki) -> None:
    with trio.fail_after(5):
        async with (
            scripted_server(serve_forever, ssl_context=pki.server_context()) as server,
            client(TlsConfig()) as http,
        ):
            with pytest.raises(BackendTransportError, match="certificate verify failed") as info:
                await http.request(post(server), b"{}")
    assert info.value.reason == "backend unreachable"
    assert server.requests == []


async def test_host_name_mismatch_fails(pki: Pki) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki.ca.issue_cert("other.pfxhttp.test").configure_cert(ctx)
    with trio.fail_after(5):
        async with (
            scripted_server(serve_forever, ssl_context=ctx) as server,
            client(TlsConfig(enabled=True, root_ca=pki.ca_file)) as http,
        ):
            with pytest.raises(BackendTransportError, match="IP address mismatch"):
                await http.request(post(server), b"{}")


async def test_skip_verify(pki: Pki) -> None:
    with trio.fail_after(5):
        async with (
            scripted_server(serve_forever, ssl_context=pki.server_context()) as server,
            client(TlsConfig(enabled=True, skip_verify=True)) as http,
        ):
            assert (await http.request(post(server), b"{}")).status == 200


async def test_client_certificate_presented(pki: Pki) -> None:
    tls = TlsConfig(enabled=True, root_ca=pki.ca_file, cert=pki.client_cert, key=pki.client_key)
    with trio.fail_after(5):
        async with (
            scripted_server(
                serve_forever, ssl_context=pki.server_context(require_client_cert=True)
            ) as server,
            client(tls) as http,
        ):
            assert (await http.request(post(server), b"{}")).body == b"ok"
    peer = server.peer_certs[0]
    assert peer is not None
    assert "client.pfxhttp.test" in repr(peer["subjectAltName"])


async def test_missing_client_certificate_fails(pki: Pki) -> None:
    with trio.fail_after(5):
        async with (
            scripted_server(
                serve_forever, ssl_context=pki.server_context(require_client_cert=True)
            ) as server,
            client(TlsConfig(enabled=True, root_ca=pki.ca_file)) as http,
        ):
            with pytest.raises(BackendTransportError):
                await http.request(post(server), b"{}")
    assert server.requests == []


def test_context_defaults_verify() -> None:
    ctx = build_ssl_context(TlsConfig())
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname


def test_context_skip_verify_only_when_enabled() -> None:
    assert build_ssl_context(TlsConfig(enabled=True, skip_verify=True)).verify_mode == ssl.CERT_NONE
    assert not build_ssl_context(TlsConfig(enabled=True, skip_verify=True)).check_hostname
    assert build_ssl_context(TlsConfig(enabled=False, skip_verify=True)).verify_mode == ssl.CERT_REQUIRED


def test_root_ca_directory(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "one.pem").write_bytes(Path(pki.ca_file).read_bytes())
    (tmp_path / "two.crt").write_bytes(trustme.CA().cert_pem.bytes())
    ctx = build_ssl_context(TlsConfig(enabled=True, root_ca=str(tmp_path)))
    assert ctx.cert_store_stats()["x509_ca"] >= 2


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("root_ca_missing", "cannot load CA"),
        ("root_ca_garbage", "cannot load CA"),
        ("root_ca_empty_dir", "no CA files"),
        ("key_without_cert", "needs a client certificate"),
        ("cert_missing", "cannot load client certificate"),
    ],
)
def test_bad_tls_files_are_config_errors(field: str, message: str, tmp_path: Path, pki: Pki) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    tls = {
        "root_ca_missing": TlsConfig(enabled=True, root_ca=str(tmp_path / "nope.pem")),
        "root_ca_garbage": TlsConfig(enabled=True, root_ca=str(garbage)),
        "root_ca_empty_dir": TlsConfig(enabled=True, root_ca=str(empty)),
        "key_without_cert": TlsConfig(enabled=True, key=pki.client_key),
        "cert_missing": TlsConfig(enabled=True, cert=str(tmp_path / "nope.pem"), key=pki.client_key),
    }[field]
    with pytest.raises(ConfigError, match=message) as info:
        build_ssl_context(tls)
    assert info.value.path.startswith("server.tls.")
    with pytest.raises(ConfigError):
        HttpClient(HttpClientConfig(), tls)  # the client builds its context at load

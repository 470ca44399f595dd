"""TLS: certificate files that can rotate, and a TLS context of the caller's own."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

import bgws
from bgws.testing import Server
from bgws.transport import Transport, get_transport

from .conftest import Changes, ServiceFactory

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

TRANSPORTS = ("picows", "websockets")


class Authority:
    """A certificate authority made for one test: its PEM, and certificates it signs."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            _builder(self.name, self.name, self.key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, folder: Path, name: str) -> tuple[Path, Path]:
        """A certificate for 127.0.0.1 and localhost: (certificate file, key file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = (
            _builder(subject, self.name, key)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_file, key_file


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> object:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )


@pytest.fixture
def authority() -> Authority:
    return Authority("bgws test CA")


@pytest.fixture
async def tls_server(tmp_path: Path, authority: Authority) -> Server:
    cert_file, key_file = authority.issue(tmp_path, "server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    async with Server(ssl_context=context, echo=True) as server:
        yield server  # type: ignore[misc]


def transport(name: str) -> Transport:
    return get_transport(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_ca_file_rewritten_in_place_is_read_on_the_next_attempt(
    tmp_path: Path,
    authority: Authority,
    tls_server: Server,
    make_service: ServiceFactory,
    name: str,
) -> None:
    """A CA bundle rewritten in place is used by the next attempt: no restart needed."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(Authority("another CA").pem)  # the wrong CA: the check fails
    assert tls_server.url.startswith("wss://127.0.0.1:")
    service = make_service(tls_server.url, tls_ca_file=str(ca_file), transport=transport(name))
    changes = Changes(service)
    async with service:
        failed = await changes.wait(bgws.State.FAILED)  # a failed certificate check is fatal
        assert "certif" in str(failed.reason).lower()
        ca_file.write_bytes(authority.pem)  # rotated in place, same path
        await service.connect()
        await changes.wait(bgws.State.CONNECTED)
        assert await service.request({"type": "ping"}, timeout=2.0) is not None


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_own_ssl_context_is_used_as_given(
    authority: Authority, tls_server: Server, make_service: ServiceFactory, name: str
) -> None:
    """A Service(ssl_context=...) connects with the caller's context, on both transports."""
    context = ssl.create_default_context(cadata=authority.pem.decode())
    service = make_service(tls_server.url, ssl_context=context, transport=transport(name))
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
    assert len(tls_server.handshakes) == 1


@pytest.mark.parametrize(
    ("url", "options", "field"),
    [
        ("ws://127.0.0.1:9/", {}, "ssl_context"),
        ("wss://127.0.0.1:9/", {"tls_verify": False}, "tls_verify"),
        ("wss://127.0.0.1:9/", {"tls_ca_file": "ca.pem"}, "tls_ca_file"),
    ],
)
def test_own_ssl_context_refused_where_it_cannot_apply(
    tmp_path: Path,
    authority: Authority,
    make_service: ServiceFactory,
    url: str,
    options: dict[str, object],
    field: str,
) -> None:
    """ssl_context with ws://, or beside tls_* options, is a ConfigError naming the field."""
    if "tls_ca_file" in options:
        (tmp_path / "ca.pem").write_bytes(authority.pem)
        options = {"tls_ca_file": str(tmp_path / "ca.pem")}
    with pytest.raises(bgws.ConfigError, match="ssl_context") as info:
        make_service(url, ssl_context=ssl.create_default_context(), **options)
    assert info.value.field == field


def test_ssl_context_of_the_wrong_type_is_refused(make_service: ServiceFactory) -> None:
    """Something that is not an ssl.SSLContext is a TypeError at build time."""
    not_a_context: Callable[[], None] = lambda: None  # noqa: E731
    with pytest.raises(TypeError, match=r"ssl\.SSLContext"):
        make_service("wss://127.0.0.1:9/", ssl_context=not_a_context)

"""agentmesh.transport.tls without a network: identities, matching, the files and their reload."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from structlog.testing import capture_logs

from agentmesh.config import TlsConfig
from agentmesh.obs.logging import get_logger
from agentmesh.transport.forwarding import NextHops
from agentmesh.transport.tls import (
    TARGET_NAME_OVERRIDE,
    NodeTls,
    TlsSetupError,
    identities,
    identity_matches,
    identity_mismatch,
    read_material,
    tls_failure,
    tls_name_of,
)
from tests.support.certs import CertFiles, CertificateAuthority


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "ca")


@pytest.fixture
def files(ca: CertificateAuthority, tmp_path: Path) -> CertFiles:
    return ca.issue(tmp_path / "node", "node", dns=["node.mesh.test"], ips=["127.0.0.1"])


def tls_config(files: CertFiles) -> TlsConfig:
    return TlsConfig(cert_file=str(files.cert), key_file=str(files.key), ca_file=str(files.ca))


# -- identities ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "presented", "matches"),
    [
        ("node.mesh.test", "node.mesh.test", True),
        ("Node.Mesh.Test", "node.mesh.test.", True),
        ("node.mesh.test", "other.mesh.test", False),
        ("*.mesh.test", "node.mesh.test", True),
        ("*.mesh.test", "a.node.mesh.test", False),  # one label only (RFC 6125 §6.4.3)
        ("*.mesh.test", "mesh.test", False),
        ("node.mesh.test", "*.mesh.test", True),  # a wildcard certificate covers the name
        ("a.node.mesh.test", "*.mesh.test", False),
        ("10.0.0.1", "10.0.0.1", True),
        ("::1", "0:0::1", True),
        ("10.0.0.1", "10.0.0.2", False),
        ("10.0.0.1", "node.mesh.test", False),
        ("*.mesh.test", "10.0.0.1", False),
    ],
)
def test_identity_matching(expected: str, presented: str, matches: bool) -> None:
    assert identity_matches(expected, presented) is matches


def test_the_mismatch_says_what_was_presented_and_what_was_expected() -> None:
    assert identity_mismatch("a.mesh.test", ("b.mesh.test", "10.0.0.2", "a.mesh.test")) is None
    assert identity_mismatch("a.mesh.test", ("b.mesh.test", "10.0.0.2")) == (
        "certificate identity b.mesh.test, 10.0.0.2 does not match tls_name 'a.mesh.test'"
    )
    assert identity_mismatch("a.mesh.test", ()) == (
        "the caller presented no certificate identity; tls_name 'a.mesh.test' expected"
    )


def test_identities_are_the_dns_and_ip_sans_of_the_auth_context() -> None:
    context = {
        "transport_security_type": [b"ssl"],
        "x509_common_name": [b"not-an-identity"],
        "peer_dns": [b"Node.Mesh.Test"],
        "peer_ip": [b"127.0.0.1", b"0:0:0:0:0:0:0:1"],
    }
    assert identities(context) == ("node.mesh.test", "127.0.0.1", "::1")
    assert identities({}) == ()  # plaintext, or no client certificate


def test_the_default_tls_name_is_the_host_of_the_address() -> None:
    assert tls_name_of("10.0.0.2:7000", None) == "10.0.0.2"
    assert tls_name_of("[::1]:7000", None) == "::1"
    assert tls_name_of("10.0.0.2:7000", "rr.mesh.test") == "rr.mesh.test"


@pytest.mark.parametrize(
    ("details", "why"),
    [
        ("connect: Connection refused (111)", None),
        ("Custom verification check failed: Hostname Verification Check failed.", "expected tls_name"),
        ("Tls handshake failed: CERTIFICATE_VERIFY_FAILED", "not signed by a CA in tls.ca_file"),
        ("Tls handshake failed: WRONG_VERSION_NUMBER", "does not speak TLS"),
        ("ipv4:127.0.0.1:5: Socket closed", "does not accept this node's certificate"),
    ],
)
def test_tls_failures_are_told_from_a_peer_that_is_down(details: str, why: str | None) -> None:
    found = tls_failure(details)
    assert found is None if why is None else (found is not None and why in found)


# -- the files -------------------------------------------------------------------------------


def test_good_files_are_read(files: CertFiles) -> None:
    material = read_material(tls_config(files))
    assert material.cert == files.cert.read_bytes() and material.key == files.key.read_bytes()
    assert material.ca == files.ca.read_bytes()


def encrypted_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: f.cert.unlink(), "tls.cert_file: {cert}: file not found"),
        (lambda f: (f.key.unlink(), f.key.mkdir()), "tls.key_file: {key}: cannot read file: Is a directory"),
        (lambda f: f.ca.write_text("junk"), "tls.ca_file: {ca}: no PEM certificate in the file"),
        (lambda f: f.key.write_text("junk"), "tls.key_file: {key}: not a PEM private key"),
        (lambda f: f.key.write_bytes(encrypted_key()), "tls.key_file: {key}: the key is encrypted"),
        (
            lambda f: f.key.write_bytes(encrypted_key().replace(b"ENCRYPTED ", b"")),
            "tls.key_file: {key}: not a PEM private key",
        ),
    ],
    ids=["missing", "unreadable", "bad-ca", "bad-key", "encrypted-key", "garbled-key"],
)
def test_unusable_files_say_which_and_why(files: CertFiles, damage: Any, message: str) -> None:
    damage(files)
    with pytest.raises(TlsSetupError) as failed:
        read_material(tls_config(files))
    assert str(failed.value).startswith(message.format(cert=files.cert, key=files.key, ca=files.ca))


def test_a_key_of_another_certificate_is_refused(
    ca: CertificateAuthority, files: CertFiles, tmp_path: Path
) -> None:
    shutil.copy(ca.issue(tmp_path / "other", "other").key, files.key)
    with pytest.raises(TlsSetupError, match=r"the key does not match the certificate in tls\.cert_file"):
        read_material(tls_config(files))


# -- reload ----------------------------------------------------------------------------------


def replace_with(new: CertFiles, files: CertFiles, *, key: bool = True, cert: bool = True) -> None:
    """Move new files over the old ones (a new inode each, as a rotation by rename gives)."""
    if key:
        os.replace(new.key, files.key)
    if cert:
        os.replace(new.cert, files.cert)


def test_changed_files_are_read_again_and_a_half_done_rotation_is_ignored(
    ca: CertificateAuthority, files: CertFiles, tmp_path: Path
) -> None:
    tls = NodeTls(tls_config(files), get_logger(node="t"))
    first = tls.current()
    assert tls.current() is first and tls.generation() == 0
    new = ca.issue(tmp_path / "new", "node", dns=["node.mesh.test"])
    with capture_logs() as logs:
        replace_with(new, files, key=False)  # the certificate first: it does not match the old key
        assert tls.current() is first
        assert tls.current() is first
        failures = [e for e in logs if e["event"] == "tls_reload_failed"]
        assert len(failures) == 1 and "does not match" in failures[0]["error"]  # once, not per handshake
        replace_with(new, files, cert=False)
        second = tls.current()
    assert second is not first and second.cert == files.cert.read_bytes()
    assert tls.generation() == 1
    assert [e["event"] for e in logs].count("tls_reloaded") == 1


def test_the_server_fetcher_hands_grpc_a_configuration_only_when_the_files_changed(
    ca: CertificateAuthority, files: CertFiles, tmp_path: Path
) -> None:
    tls = NodeTls(tls_config(files), get_logger(node="t"))
    assert isinstance(tls.server_credentials(), grpc.ServerCredentials)
    assert tls._fetch() is None
    replace_with(ca.issue(tmp_path / "new", "node"), files)
    assert isinstance(tls._fetch(), grpc.ServerCertificateConfiguration)
    assert tls._fetch() is None


async def test_channels_check_the_server_against_tls_name_when_it_is_not_the_host(
    files: CertFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = NodeTls(tls_config(files), get_logger(node="t"))
    opened: list[Any] = []
    original = grpc.aio.secure_channel

    def spy(target: str, credentials: Any, options: Any = None) -> grpc.aio.Channel:
        opened.append((target, list(options or ())))
        return original(target, credentials, options=options)

    monkeypatch.setattr(grpc.aio, "secure_channel", spy)
    for channel in (tls.channel("127.0.0.1:1", "node.mesh.test"), tls.channel("127.0.0.1:1", "127.0.0.1")):
        await channel.close()
    assert opened == [("127.0.0.1:1", [(TARGET_NAME_OVERRIDE, "node.mesh.test")]), ("127.0.0.1:1", [])]


class CountingFactory:
    """A channel factory whose credentials change when told to."""

    def __init__(self) -> None:
        self.current = 0
        self.made: list[tuple[str, str | None]] = []

    def channel(self, target: str, tls_name: str | None = None) -> grpc.aio.Channel:
        self.made.append((target, tls_name))
        return grpc.aio.insecure_channel(target)

    def generation(self) -> object:
        return self.current


async def test_next_hop_channels_are_replaced_when_the_credentials_change() -> None:
    factory = CountingFactory()
    hops = NextHops("n", channels=factory, tls_name_for=lambda address: "hop.mesh.test")
    try:
        hops._stub("127.0.0.1:1")
        hops._stub("127.0.0.1:1")
        assert factory.made == [("127.0.0.1:1", "hop.mesh.test")]
        factory.current = 1
        hops._stub("127.0.0.1:1")
        assert len(factory.made) == 2 and len(hops._retiring) == 1
    finally:
        await hops.close()
    assert not hops._retiring

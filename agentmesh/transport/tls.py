"""TLS and mutual TLS for the peering port and every channel a node opens to another (docs/security.md).

One `NodeTls` per node holds the certificate, key and CA bundle named by the `tls` section. It gives
the gRPC server credentials whose certificate configuration is fetched again at each handshake, and
builds the credentials of each new outgoing channel from the files as they are then. Both re-read the
files only when one of them changed on disk (its mtime, size or inode), so a certificate rotated on
disk is used by the next connection while established ones go on. A rotation that leaves the files
inconsistent (a new certificate beside the old key, say, while they are being replaced one by one)
is logged and ignored until the files agree again.

Identities are what RFC 6125 calls reference identifiers: a DNS name or an IP address, matched against
the subjectAltName entries of the peer's certificate (never its common name, RFC 6125 §6.4.4 when
SANs are present, and mesh certificates always have them). A `*` leftmost label stands for exactly
one label (RFC 6125 §6.4.3).
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import grpc
import grpc.aio
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from agentmesh.config import TlsConfig, split_host_port

#: The gRPC channel option naming the identity the server certificate is checked against, when it is
#: not the host of the target (an IP resolved from a DNS name, say).
TARGET_NAME_OVERRIDE = "grpc.ssl_target_name_override"


class TlsSetupError(ValueError):
    """The `tls` section's files cannot be used; the message names the key, the file and why."""


class ChannelFactory(Protocol):
    """How a node opens channels to other nodes: plaintext, or TLS checked against a name."""

    def channel(self, target: str, tls_name: str | None = None) -> grpc.aio.Channel:
        """A new channel to `target`, whose certificate must match `tls_name` (default: the target host)."""
        ...

    def generation(self) -> object:
        """Changes whenever channels opened from now on would carry other credentials."""
        ...


class Plaintext:
    """No TLS: the default when the configuration has no `tls` section (local development only)."""

    def channel(self, target: str, tls_name: str | None = None) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(target)

    def generation(self) -> object:
        return None


PLAINTEXT = Plaintext()


# -- the files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Material:
    """The PEM contents of the three files, checked to belong together, and their on-disk stamps."""

    cert: bytes
    key: bytes
    ca: bytes
    stamp: tuple[tuple[int, int, int] | None, ...]
    not_after: str


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)  # follows symlinks: a Kubernetes Secret volume swaps a link to new files
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


def _read(key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise TlsSetupError(f"tls.{key}: {path}: file not found") from None
    except OSError as error:
        raise TlsSetupError(f"tls.{key}: {path}: cannot read file: {error.strerror or error}") from None


def _certificates(key: str, path: str, pem: bytes) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certificates = []
    if not certificates:
        raise TlsSetupError(f"tls.{key}: {path}: no PEM certificate in the file")
    return certificates


def _public_key_der(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def read_material(config: TlsConfig) -> Material:
    """Read and check the files; raises TlsSetupError saying which file is wrong and how."""
    paths = (config.cert_file, config.key_file, config.ca_file)
    stamp = tuple(_stamp(path) for path in paths)
    cert = _read("cert_file", config.cert_file)
    key = _read("key_file", config.key_file)
    ca = _read("ca_file", config.ca_file)
    chain = _certificates("cert_file", config.cert_file, cert)
    _certificates("ca_file", config.ca_file, ca)
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except TypeError:
        raise TlsSetupError(
            f"tls.key_file: {config.key_file}: the key is encrypted; give it unencrypted (protect the file)"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as error:
        raise TlsSetupError(f"tls.key_file: {config.key_file}: not a PEM private key ({error})") from None
    # The first certificate of the file is the node's own; the rest, if any, its intermediates.
    if _public_key_der(private_key.public_key()) != _public_key_der(chain[0].public_key()):
        raise TlsSetupError(
            f"tls.key_file: {config.key_file}: the key does not match the certificate in"
            f" tls.cert_file ({config.cert_file})"
        )
    not_after = chain[0].not_valid_after_utc.isoformat()
    return Material(cert, key, ca, stamp, not_after)


class NodeTls:
    """A node's TLS credentials, re-read from disk when the files change; safe to use from any thread.

    gRPC calls the server's certificate fetcher from its own threads during handshakes, while the
    event loop builds client credentials: a lock keeps the two from reading the files at once.
    """

    def __init__(self, config: TlsConfig, log: Any) -> None:
        self.config = config
        self._log = log
        self._lock = threading.Lock()
        self._material = read_material(config)  # raises TlsSetupError: the node does not start
        self._served: tuple[tuple[int, int, int] | None, ...] = self._material.stamp
        self._failed: tuple[tuple[int, int, int] | None, ...] | None = None
        self._generation = 0

    @property
    def verifies_clients(self) -> bool:
        """Whether callers must present a certificate the CA signed (mutual TLS)."""
        return self.config.require_client_cert

    def current(self) -> Material:
        """The material as the files now hold it; the last good one while they are inconsistent."""
        paths = (self.config.cert_file, self.config.key_file, self.config.ca_file)
        with self._lock:
            stamp = tuple(_stamp(path) for path in paths)
            if stamp != self._material.stamp and stamp != self._failed:
                self._reload(stamp)
            return self._material

    def _reload(self, stamp: tuple[tuple[int, int, int] | None, ...]) -> None:
        try:
            material = read_material(self.config)
        except TlsSetupError as error:
            self._failed = stamp  # log once per change on disk, not at every handshake
            self._log.warning("tls_reload_failed", error=str(error), using="the previous certificate")
            return
        self._material, self._failed = material, None
        self._generation += 1
        self._log.info("tls_reloaded", cert_file=self.config.cert_file, not_after=material.not_after)

    def generation(self) -> object:
        self.current()
        return self._generation

    # -- server ----------------------------------------------------------------------------

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials for the node's server; each handshake picks up files changed on disk."""
        # gRPC takes None from the fetcher as "unchanged"; its type stubs leave that out.
        fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], self._fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._server_configuration(self._material),
            fetch,
            require_client_authentication=self.config.require_client_cert,
        )

    def _server_configuration(self, material: Material) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(material.key, material.cert)], material.ca)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher, called before each handshake: a new configuration, or None for no change."""
        try:
            material = self.current()
            with self._lock:
                if material.stamp == self._served:
                    return None
                self._served = material.stamp
            return self._server_configuration(material)
        except Exception as error:  # raised into gRPC's C core it would only be printed; keep serving
            self._log.error("tls_fetch_failed", error=repr(error))
            return None

    # -- client ----------------------------------------------------------------------------

    def channel(self, target: str, tls_name: str | None = None) -> grpc.aio.Channel:
        material = self.current()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=material.ca, private_key=material.key, certificate_chain=material.cert
        )
        host = split_host_port(target)[0]
        options: list[tuple[str, Any]] = []
        if tls_name is not None and tls_name != host:
            options.append((TARGET_NAME_OVERRIDE, tls_name))
        return grpc.aio.secure_channel(target, credentials, options=options)


def channel_factory(tls: NodeTls | None) -> ChannelFactory:
    return PLAINTEXT if tls is None else tls


# -- identities --------------------------------------------------------------------------------


def tls_name_of(address: str, tls_name: str | None) -> str:
    """The identity expected of the neighbour at `address`: `tls_name`, by default the address's host."""
    return tls_name if tls_name is not None else split_host_port(address)[0]


def identities(auth_context: Mapping[str, Iterable[bytes]]) -> tuple[str, ...]:
    """The subjectAltName DNS names and IP addresses of the certificate a TLS handshake verified.

    `auth_context` is grpc's `ServicerContext.auth_context()`; it has no such keys on a plaintext
    connection or when the client presented no certificate.
    """
    names = [value.decode("ascii", "replace").lower() for value in auth_context.get("peer_dns", ())]
    for value in auth_context.get("peer_ip", ()):
        text = value.decode("ascii", "replace")
        try:
            names.append(str(ipaddress.ip_address(text)))
        except ValueError:
            names.append(text)
    return tuple(names)


def _as_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def identity_matches(expected: str, presented: str) -> bool:
    """Whether a certificate's identity `presented` satisfies the reference identity `expected`.

    IP addresses match only equal addresses (RFC 6125 §6.2.1 leaves IPs to exact comparison, as
    RFC 2818 §3.1 does). DNS names compare case-insensitively, label by label; a `*` leftmost label,
    in either, matches exactly one label (RFC 6125 §6.4.3), so `*.x.svc` covers `a.x.svc` but neither
    `x.svc` nor `a.b.x.svc`.
    """
    expected_ip, presented_ip = _as_ip(expected), _as_ip(presented)
    if expected_ip is not None or presented_ip is not None:
        return expected_ip is not None and expected_ip == presented_ip
    want = expected.lower().rstrip(".").split(".")
    have = presented.lower().rstrip(".").split(".")
    if len(want) != len(have) or not all(want) or not all(have):
        return False
    first_ok = want[0] == have[0] or "*" in (want[0], have[0])
    return first_ok and want[1:] == have[1:]


def identity_mismatch(expected: str, presented: Sequence[str]) -> str | None:
    """Why a caller presenting `presented` is not the neighbour expected to be `expected`, or None."""
    if any(identity_matches(expected, name) for name in presented):
        return None
    if not presented:
        return f"the caller presented no certificate identity; tls_name {expected!r} expected"
    return f"certificate identity {', '.join(presented)} does not match tls_name {expected!r}"


#: What gRPC's connection errors say when TLS refused a connection, and what that means, first match wins.
_TLS_FAILURES = (
    ("hostname verification", "the server's certificate does not carry the expected tls_name"),
    ("certificate_verify_failed", "the server's certificate is not signed by a CA in tls.ca_file"),
    ("wrong_version_number", "the server does not speak TLS (a plaintext node?)"),
    # The server's handshake refused our certificate (TLS 1.3 tells the client only by closing).
    (
        "socket closed",
        "the server closed the connection during the TLS handshake: most likely it does not accept"
        " this node's certificate (the server's gRPC log says why)",
    ),
    ("handshake", "the TLS handshake failed"),
    ("ssl", "the TLS handshake failed"),
)


def tls_failure(details: str) -> str | None:
    """What TLS refused, read from a failed connection's gRPC error text; None when it was not TLS."""
    text = details.lower()
    return next((why for marker, why in _TLS_FAILURES if marker in text), None)

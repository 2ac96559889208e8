"""The broker's TLS files: a server certificate the hub CA issues for the broker's host names.

`hub serve --mqtt mqtts://HOST:8883` writes, in the broker folder (`--mqtt-dir`):

    ca.crt       the hub CA (what devices and the hub check the broker against)
    broker.crt   the broker's certificate: CN edgeport-mqtt-broker, SANs the broker's host names
    broker.key   its key (0600)

mosquitto's generated config points its TLS listener at them (`hub/control/mqtt_broker.py`). A certificate
that still covers the names, comes from this CA and has more than 30 days left is kept across starts.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.pki import LEAF_DAYS, CertificateAuthority, write_private
from hub.serve_config import UNSPECIFIED_HOSTS

CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "broker.crt", "broker.key"
BROKER_CN = "edgeport-mqtt-broker"
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class BrokerTls:
    """Paths of the broker's TLS files (what mosquitto's listener is configured with)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> BrokerTls:
        """The files' places in a broker folder (they may not exist yet)."""
        d = Path(directory).resolve()
        return cls(d / CA_FILE, d / CERT_FILE, d / KEY_FILE)


def broker_host_names(*hosts: str) -> list[str]:
    """The names a broker certificate covers: `hosts` (the broker's address as the hub and devices dial it),
    loopback and this machine's name; bind-to-all addresses are left out (nobody dials them)."""
    names = ["127.0.0.1", "localhost", socket.gethostname(), *hosts]
    return [n for n in dict.fromkeys(names) if n not in UNSPECIFIED_HOSTS]


def _sans(hosts: list[str]) -> list[x509.GeneralName]:
    import ipaddress

    out: list[x509.GeneralName] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def _covers(cert: x509.Certificate, ca: CertificateAuthority, hosts: list[str]) -> bool:
    try:
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    names = {str(v) for v in have.get_values_for_type(x509.IPAddress)} | set(have.get_values_for_type(x509.DNSName))
    fresh = cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + RENEW_BEFORE
    return fresh and set(hosts) <= names and cert.issuer.public_bytes() == x509.load_pem_x509_certificate(
        ca.ca_pem).subject.public_bytes()  # fmt: skip


def issue_broker_tls(ca: CertificateAuthority, directory: Path, hosts: list[str]) -> BrokerTls:
    """Write (or keep) the broker's CA, certificate and key in `directory` for `hosts`; return their paths."""
    files = BrokerTls.in_dir(directory)
    files.cert.parent.mkdir(parents=True, exist_ok=True)
    kept = files.ca.exists() and files.ca.read_bytes() == ca.ca_pem and files.cert.exists() and files.key.exists()
    if kept and _covers(x509.load_pem_x509_certificate(files.cert.read_bytes()), ca, hosts):
        return files
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = ca.issue(
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_CN)]))
        .public_key(key.public_key())
        .add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False),
        not_before=now - dt.timedelta(minutes=5),
        days=LEAF_DAYS,
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(files.key, key_pem)  # mosquitto runs as the hub's user, so 0600 still lets it read the key
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.ca.write_bytes(ca.ca_pem)
    return files

"""A KRaft broker with an extra ``SASL_SSL`` listener (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) for the
production-connectivity tests. The plain listener stays for the fixture's readiness probe.

TLS uses a throwaway CA and a server certificate for 127.0.0.1 (PEM keystore); the SCRAM
credentials are written into the metadata log when the storage is formatted.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.kafka_server import KafkaBroker
from tests.support.procs import ManagedProcess, free_port

USER = "alice"
PASSWORD = "alice-secret-0123"
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_tls_material(directory: Path) -> tuple[Path, Path]:
    """(CA certificate PEM, server key + certificate chain PEM) for 127.0.0.1 / localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("rtg-test-ca"))
        .issuer_name(_name("rtg-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    keystore = directory / "server-keystore.pem"
    # Kafka's PEM keystore: an unencrypted PKCS#8 key followed by the certificate chain.
    keystore.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + cert.public_bytes(serialization.Encoding.PEM)
        + ca.public_bytes(serialization.Encoding.PEM)
    )
    return ca_path, keystore


class SecureKafkaBroker(KafkaBroker):
    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, name="kafka-secure")
        self.secure_port = free_port(self.host)
        self.ca_file, self.keystore = write_tls_material(workdir / "tls")

    @property
    def secure_bootstrap(self) -> str:
        return f"{self.host}:{self.secure_port}"

    def _write_config(self) -> None:
        super()._write_config()
        props = dict(line.split("=", 1) for line in self.config_path.read_text().splitlines() if "=" in line)
        jaas_plain = (
            f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}="{PASSWORD}";'
        )
        jaas_scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        props.update(
            {
                "listeners": props["listeners"] + f",SASL_SSL://{self.host}:{self.secure_port}",
                "advertised.listeners": props["advertised.listeners"]
                + f",SASL_SSL://{self.host}:{self.secure_port}",
                "listener.security.protocol.map": props["listener.security.protocol.map"]
                + ",SASL_SSL:SASL_SSL",
                "sasl.enabled.mechanisms": ",".join(MECHANISMS),
                "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas_plain,
                "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": jaas_scram,
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas_scram,
                "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
                "listener.name.sasl_ssl.ssl.keystore.location": str(self.keystore),
            }
        )
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _format(self) -> None:
        self._write_config()
        scram = [
            arg
            for mechanism in MECHANISMS[1:]
            for arg in ("--add-scram", f"{mechanism}=[name={USER},password={PASSWORD}]")
        ]
        fmt = ManagedProcess(
            f"{self.name}-format",
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                self.cluster_id,
                "-c",
                str(self.config_path),
                *scram,
            ),
            self.workdir,
        )
        try:
            code = fmt.popen.wait(timeout=60)
        finally:
            fmt.stop()
        if code != 0:
            raise RuntimeError(f"kafka storage format failed with {code}\n{fmt.tail()}")

"""A KRaft broker with an extra ``SASL_SSL`` listener (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) for the
production-connectivity tests. The plain listener stays for the fixture's readiness probe.

TLS uses a throwaway CA and a server certificate for 127.0.0.1 (PEM keystore); the SCRAM
credentials are written into the metadata log when the storage is formatted.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.certs import CertificateAuthority, issue_server_cert, write_pem
from tests.support.kafka_server import KafkaBroker
from tests.support.procs import free_port

USER = "alice"
PASSWORD = "alice-secret-0123"
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def write_tls_material(directory: Path) -> tuple[Path, Path]:
    """(CA certificate PEM, server key + certificate chain PEM) for 127.0.0.1 / localhost."""
    ca = CertificateAuthority()
    leaf = issue_server_cert(ca)
    ca_path = write_pem(directory / "ca.pem", ca.cert_pem, 0o644)
    # Kafka's PEM keystore: an unencrypted PKCS#8 key followed by the certificate chain.
    keystore = write_pem(directory / "server-keystore.pem", leaf.key_pem + leaf.cert_pem + ca.cert_pem)
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

    def _format(self, *extra: str) -> None:
        # SCRAM credentials live in the metadata log, so they are written when storage is formatted.
        scram = [
            arg
            for mechanism in MECHANISMS[1:]
            for arg in ("--add-scram", f"{mechanism}=[name={USER},password={PASSWORD}]")
        ]
        super()._format(*extra, *scram)

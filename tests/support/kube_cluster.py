"""A real Kubernetes control plane on loopback ports for the cluster tests.

etcd, kube-apiserver (secure serving, client-certificate auth, RBAC), kube-controller-manager,
kube-scheduler and kwok (fake kubelets, so Pods become Running/Ready on fake Nodes), all built by
``tools/kube.sh`` from the published Go modules and started as child processes in a temp dir.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from tests.support.certs import CertificateAuthority, Issued, key_pem, new_key, write_pem
from tests.support.procs import ManagedProcess, free_port, port_open, wait_until
from tests.support.versions import CACHE_DIR, VERSIONS

KUBE_VERSION = VERSIONS["KUBE_VERSION"]
KWOK_VERSION = VERSIONS["KWOK_VERSION"]
HELM_VERSION = VERSIONS["HELM_VERSION"]
KUBE_BIN_DIR = CACHE_DIR / f"kube-v{KUBE_VERSION}" / "bin"
KWOK_BIN = CACHE_DIR / f"kwok-v{KWOK_VERSION}" / "bin" / "kwok"
HELM_BIN = CACHE_DIR / f"helm-v{HELM_VERSION}" / "bin" / "helm"

# kwok manages only Nodes carrying this annotation; every fake Node created here has it.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class KubeError(RuntimeError):
    """A non-2xx answer from the API server."""

    def __init__(self, method: str, path: str, status: int, body: dict[str, Any] | str) -> None:
        self.status = status
        self.body = body
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{method} {path} -> {status}: {message}")


def kube_binary(name: str) -> Path:
    """Path of a built control-plane binary; a clear failure naming the build command if missing."""
    path = KWOK_BIN if name == "kwok" else KUBE_BIN_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: build the control plane with `bash tools/kube.sh`")
    return path


def helm_binary() -> Path:
    if not HELM_BIN.is_file():
        raise FileNotFoundError(f"{HELM_BIN} is missing: build helm with `bash tools/helm.sh`")
    return HELM_BIN


# --- kubeconfig -------------------------------------------------------------------------------


def _kubeconfig(server: str, ca_pem: bytes, user: str, issued: Issued) -> str:
    """A kubeconfig with everything embedded, so the file alone is enough for any client."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "rtg-test", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(issued.cert_pem),
                    "client-key-data": b64(issued.key_pem),
                },
            }
        ],
        "contexts": [{"name": "rtg-test", "context": {"cluster": "rtg-test", "user": user}}],
        "current-context": "rtg-test",
    }
    # JSON is valid YAML; every kubeconfig reader accepts it.
    return json.dumps(config, indent=2)


# --- the cluster -------------------------------------------------------------------------------


class KubeCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, on loopback ports.

    Attributes for tests: ``kubeconfig`` (admin, ``system:masters``), ``server`` (https URL),
    ``ca_file``, ``client_cert_file``, ``client_key_file``, ``node_names`` (fake kwok Nodes),
    ``version`` (the server's gitVersion), ``log_dir``.
    """

    def __init__(self, base_dir: Path, *, nodes: int = 1) -> None:
        self.base_dir = base_dir
        self.log_dir = base_dir / "logs"
        self.pki_dir = base_dir / "pki"
        self.node_names = [f"kwok-node-{i}" for i in range(nodes)]
        self.procs: dict[str, ManagedProcess] = {}
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.api_port = free_port()
        self.server = f"https://127.0.0.1:{self.api_port}"
        self.kubeconfig = base_dir / "admin.kubeconfig"
        self.ca_file = self.pki_dir / "ca.crt"
        self.client_cert_file = self.pki_dir / "admin.crt"
        self.client_key_file = self.pki_dir / "admin.key"
        self.version = ""
        self.started_in = 0.0
        self._ssl: ssl.SSLContext | None = None

    # - lifecycle -

    def start(self) -> KubeCluster:
        t0 = time.monotonic()
        binaries = {
            n: kube_binary(n)
            for n in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
        }
        self.pki_dir.mkdir(parents=True, exist_ok=True)
        kubeconfigs = self._write_pki()
        try:
            self._start_etcd(binaries["etcd"])
            self._start_apiserver(binaries["kube-apiserver"])
            self._start_controller_manager(binaries["kube-controller-manager"], kubeconfigs)
            self._start_scheduler(binaries["kube-scheduler"], kubeconfigs)
            self._start_kwok(binaries["kwok"])
            for name in self.node_names:
                self.create_fake_node(name)
            self.wait_default_service_account("default", timeout=60)
            for name in self.node_names:
                self.wait_node_ready(name, timeout=60)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0
        return self

    def stop(self) -> None:
        # reverse start order: clients of the API server first, etcd last
        for name in reversed(list(self.procs)):
            self.procs[name].stop()
        self.procs.clear()

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs.values())

    def _write_pki(self) -> dict[str, Path]:
        ca = CertificateAuthority("rtg-test-ca")
        write_pem(self.ca_file, ca.cert_pem, 0o644)
        write_pem(self.pki_dir / "ca.key", ca.key_pem)
        serving = ca.issue(
            "kube-apiserver",
            server_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            server_ips=("127.0.0.1", "10.96.0.1"),
        )
        write_pem(self.pki_dir / "apiserver.crt", serving.cert_pem, 0o644)
        write_pem(self.pki_dir / "apiserver.key", serving.key_pem)
        sa_key = new_key()
        write_pem(self.pki_dir / "sa.key", key_pem(sa_key))
        write_pem(
            self.pki_dir / "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            0o644,
        )
        # front proxy (aggregation layer): without it every component logs a missing requestheader CA
        front_ca = CertificateAuthority("rtg-test-front-proxy-ca")
        write_pem(self.pki_dir / "front-proxy-ca.crt", front_ca.cert_pem, 0o644)
        front = front_ca.issue("front-proxy-client", client=True)
        write_pem(self.pki_dir / "front-proxy-client.crt", front.cert_pem, 0o644)
        write_pem(self.pki_dir / "front-proxy-client.key", front.key_pem)
        admin = ca.issue("rtg-admin", organizations=("system:masters",), client=True)
        write_pem(self.client_cert_file, admin.cert_pem, 0o644)
        write_pem(self.client_key_file, admin.key_pem)
        write_pem(self.kubeconfig, _kubeconfig(self.server, ca.cert_pem, "admin", admin).encode())
        # the controller-manager and scheduler authenticate as themselves, so bootstrap RBAC applies
        out: dict[str, Path] = {}
        for component in ("kube-controller-manager", "kube-scheduler"):
            issued = ca.issue(f"system:{component}", client=True)
            path = self.base_dir / f"{component}.kubeconfig"
            write_pem(path, _kubeconfig(self.server, ca.cert_pem, component, issued).encode())
            out[component] = path
        return out

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.log_dir, env=env, cwd=self.base_dir)
        self.procs[name] = proc
        return proc

    def _start_etcd(self, binary: Path) -> None:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        proc = self._spawn(
            "etcd",
            [
                str(binary),
                "--name=default",
                f"--data-dir={self.base_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                # a test cluster is thrown away: durability costs time on a shared disk
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client}/health", timeout=2) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")

        wait_until(healthy, timeout=30, what="etcd /health", proc=proc)

    def _start_apiserver(self, binary: Path) -> None:
        pki = self.pki_dir
        proc = self._spawn(
            "kube-apiserver",
            [
                str(binary),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}",
                f"--cert-dir={self.base_dir / 'apiserver-certs'}",
                "--authorization-mode=Node,RBAC",
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                # the Endpoints of the `kubernetes` Service may not hold a loopback address
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
            ],
        )
        wait_until(
            lambda: self._get_status("/readyz") == 200,
            timeout=90,
            what="kube-apiserver /readyz",
            proc=proc,
            interval=0.25,
        )
        self.version = str(self.request("GET", "/version")["gitVersion"])

    def _component_flags(self, kubeconfig: Path, cert_dir: str) -> list[str]:
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cert-dir={self.base_dir / cert_dir}",
            "--profiling=false",
            "--v=1",
        ]

    def _start_controller_manager(self, binary: Path, kubeconfigs: dict[str, Path]) -> None:
        pki = self.pki_dir
        self._spawn(
            "kube-controller-manager",
            [
                str(binary),
                *self._component_flags(kubeconfigs["kube-controller-manager"], "kcm-certs"),
                "--controllers=*",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                f"--cluster-signing-cert-file={self.ca_file}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # GC and ReplicaSets should react within the test's deadlines on two busy cores
                "--concurrent-gc-syncs=5",
            ],
        )

    def _start_scheduler(self, binary: Path, kubeconfigs: dict[str, Path]) -> None:
        self._spawn(
            "kube-scheduler",
            [str(binary), *self._component_flags(kubeconfigs["kube-scheduler"], "scheduler-certs")],
        )

    def _start_kwok(self, binary: Path) -> None:
        self._spawn(
            "kwok",
            [
                str(binary),
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                # Pod IPs are only written into status; nothing ever connects to them
                "--cidr=10.0.0.1/24",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
            ],
            # kwok also reads ~/.kwok/kwok.yaml; an empty HOME keeps a developer's config out
            env={"HOME": str(self.base_dir)},
        )

    # - REST helpers (sync, stdlib only; tests use kubernetes_asyncio on top of ``kubeconfig``) -

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            ctx.load_cert_chain(str(self.client_cert_file), str(self.client_key_file))
            self._ssl = ctx
        return self._ssl

    def _get_status(self, path: str) -> int:
        req = urllib.request.Request(self.server + path)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> dict[str, Any]:
        """One API call as the admin user; raises KubeError on a non-2xx status."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            parsed: dict[str, Any] | str
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
            raise KubeError(method, path, exc.code, parsed) from None
        result: dict[str, Any] = json.loads(raw) if raw else {}
        return result

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    # - cluster objects -

    def create_fake_node(self, name: str) -> None:
        """A Node that kwok keeps Ready and whose Pods it moves to Running/Ready."""
        capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "500Gi"}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake"},
            },
        }
        self.request("POST", "/api/v1/nodes", node)

    def wait_node_ready(self, name: str, timeout: float) -> None:
        def ready() -> bool:
            node = self.get_or_none(f"/api/v1/nodes/{name}") or {}
            conditions = node.get("status", {}).get("conditions", [])
            return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

        self._wait(ready, timeout, f"fake node {name} Ready (kwok)")

    def wait_default_service_account(self, namespace: str, timeout: float) -> None:
        self._wait(
            lambda: self.get_or_none(f"/api/v1/namespaces/{namespace}/serviceaccounts/default") is not None,
            timeout,
            f"ServiceAccount {namespace}/default (kube-controller-manager)",
        )

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        self.request("POST", "/api/v1/namespaces", body)
        # Pods are refused until the namespace's default ServiceAccount exists
        self.wait_default_service_account(name, timeout=60)

    def delete_namespace(self, name: str, *, wait: float = 0) -> None:
        with contextlib.suppress(KubeError):
            self.request("DELETE", f"/api/v1/namespaces/{name}")
        if wait:
            self._wait(
                lambda: self.get_or_none(f"/api/v1/namespaces/{name}") is None,
                wait,
                f"namespace {name} deleted",
            )

    def _wait(self, probe: Any, timeout: float, what: str) -> None:
        try:
            wait_until(probe, timeout=timeout, what=what, interval=0.25)
        except TimeoutError as exc:
            dead = [n for n, p in self.procs.items() if not p.alive()]
            raise TimeoutError(f"{exc}\nexited: {dead or 'none'}\n{self.logs()}") from None

    def healthy(self) -> bool:
        return all(p.alive() for p in self.procs.values()) and port_open(self.api_port)

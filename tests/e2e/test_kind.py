"""End to end on kind: images built, chart installed, a CR applied, a Socket.IO client over WSS.

Runs where Docker and kind exist (a developer laptop, CI with Docker); elsewhere it skips and
says which prerequisite is missing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from tests.support.certs import CertificateAuthority, issue_server_cert
from tests.support.procs import ManagedProcess, free_port, port_open, wait_until

pytestmark = pytest.mark.e2e_kind

REPO = Path(__file__).resolve().parents[2]
NS = "realtime"
JWT_SECRET = "e2e-only-hs256-secret-at-least-32-bytes-long"
GATEWAY_IMAGE = "realtime-gateway:e2e"
OPERATOR_IMAGE = "realtime-gateway-operator:e2e"


def missing_prerequisite() -> str | None:
    for tool in ("docker", "kind", "kubectl", "helm"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (the kind tier needs Docker, kind, kubectl and helm)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` failed: {exc}"
    if info.returncode != 0:
        return f"`docker info` failed: no Docker engine ({info.stderr.strip().splitlines()[-1:] or ['?']})"
    return None


def run(*argv: str, timeout: float = 900, input_text: str | None = None) -> str:
    out = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, input=input_text, check=False
    )
    assert out.returncode == 0, f"{' '.join(argv)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    name = f"rtg-e2e-{secrets.token_hex(3)}"
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    run("docker", "build", "-f", "gateway/Dockerfile", "-t", GATEWAY_IMAGE, str(REPO))
    run("docker", "build", "-f", "operator/Dockerfile", "-t", OPERATOR_IMAGE, str(REPO))
    run("kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig), "--wait", "120s")
    try:
        for image in (GATEWAY_IMAGE, OPERATOR_IMAGE):
            run("kind", "load", "docker-image", image, "--name", name)
        yield kubeconfig
    finally:
        subprocess.run(
            ["kind", "delete", "cluster", "--name", name], capture_output=True, timeout=300, check=False
        )


def kubectl(kubeconfig: Path, *args: str, input_text: str | None = None) -> str:
    return run("kubectl", f"--kubeconfig={kubeconfig}", *args, input_text=input_text)


def test_client_receives_an_event_over_wss_through_the_service(kind_cluster: Path, tmp_path: Path) -> None:
    kc = kind_cluster
    dev = REPO / "deploy" / "dev"
    for manifest in ("namespace.yaml", "redis.yaml", "kafka.yaml"):
        kubectl(kc, "apply", "-f", str(dev / manifest))
    leaf = issue_server_cert(CertificateAuthority())
    cert, key = leaf.cert_pem, leaf.key_pem
    secrets_doc = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "realtime-gateway-jwt", "namespace": NS},
            "stringData": {"secret": JWT_SECRET, "api-key": "e2e-api-key"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "realtime-gateway-tls", "namespace": NS},
            "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()},
        },
    ]
    kubectl(kc, "apply", "-f", "-", input_text=yaml.safe_dump_all(secrets_doc))
    run(
        "helm", "install", "rgo", str(REPO / "charts" / "realtime-gateway-operator"),
        f"--kubeconfig={kc}", "--namespace", NS,
        "--set", "image.repository=realtime-gateway-operator", "--set", "image.tag=e2e",
        "--set", f"watchNamespaces={{{NS}}}", "--wait", "--timeout", "5m",
    )  # fmt: skip
    kubectl(kc, "-n", NS, "rollout", "status", "statefulset/kafka", "--timeout=300s")
    cr = yaml.safe_load((dev / "realtimegateway.yaml").read_text())
    cr["spec"]["image"] = GATEWAY_IMAGE
    cr["spec"]["imagePullPolicy"] = "Never"
    cr["spec"]["replicas"] = {"min": 2, "max": 3}
    kubectl(kc, "apply", "-f", "-", input_text=yaml.safe_dump(cr))
    kubectl(
        kc, "-n", NS, "wait", "realtimegateway/realtime-gateway",
        "--for=condition=Ready", "--timeout=300s",
    )  # fmt: skip

    port = free_port()
    forward = ManagedProcess(
        "port-forward",
        ["kubectl", f"--kubeconfig={kc}", "-n", NS, "port-forward", "svc/realtime-gateway", f"{port}:443"],
        tmp_path,
    )
    try:
        wait_until(lambda: port_open(port), timeout=60, what="kubectl port-forward", proc=forward)
        session = asyncio.run(connect_and_receive(port))
    finally:
        forward.stop()
    assert session["userId"] == "e2e-customer" and session["role"] == "customer"
    assert session["reconnectToken"]

    status = json.loads(kubectl(kc, "-n", NS, "get", "realtimegateway/realtime-gateway", "-o", "json"))[
        "status"
    ]
    assert status["readyReplicas"] >= 2 and status["sessionAffinity"] == "ClientIP"


async def connect_and_receive(port: int) -> dict[str, Any]:
    import socketio

    now = int(time.time())
    token = jwt.encode(
        {"sub": "e2e-customer", "role": "customer", "iss": "movenow-dev", "iat": now, "exp": now + 600},
        JWT_SECRET,
        algorithm="HS256",
    )
    client = socketio.AsyncClient(ssl_verify=False)  # the test's own self-signed certificate
    got: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    @client.on("session", namespace="/client")
    async def on_session(data: dict[str, Any]) -> None:
        if not got.done():
            got.set_result(data)

    await client.connect(
        f"https://127.0.0.1:{port}", namespaces=["/client"], auth={"token": token}, transports=["websocket"]
    )
    try:
        return await asyncio.wait_for(got, timeout=30)
    finally:
        await client.disconnect()

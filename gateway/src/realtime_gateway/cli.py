"""``realtime-gateway serve`` and ``realtime-gateway token`` (a dev JWT for the configured secret)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import ssl
import sys
from collections.abc import Sequence

from aiohttp import web

from realtime_gateway.app import build_gateway, create_app
from realtime_gateway.auth.verifier import mint_dev_token
from realtime_gateway.ingest import emit_cli
from realtime_gateway.observability.logs import configure_logging
from realtime_gateway.observability.wiring import drain
from realtime_gateway.settings import Settings, SettingsError, load_settings


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"realtime-gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def _serve(settings: Settings) -> None:
    gateway = build_gateway(settings)
    app = create_app(gateway)
    runner = web.AppRunner(
        # The drain takes 80% of RTG_DRAIN_SECONDS; closing what is left gets the rest.
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=max(1.0, settings.drain_seconds * 0.2),
    )
    await runner.setup()
    ssl_context = None
    if settings.tls_cert_file and settings.tls_key_file:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        ssl_context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    site = web.TCPSite(runner, settings.bind_host, settings.port, ssl_context=ssl_context)
    await site.start()
    # Everything built so far lives as long as the process: keep it out of the cyclic collector's
    # passes, and collect the young generation less often (the hot path allocates short-lived
    # dicts and frames per event, few cycles), so full passes stop scanning the idle sockets' objects.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)
    scheme = "https" if ssl_context else "http"
    url = (
        f"{scheme}://{'127.0.0.1' if settings.bind_host == '0.0.0.0' else settings.bind_host}:{settings.port}"
    )
    print(f"realtime-gateway {gateway.settings.instance_id} listening on {url}/", flush=True)
    if settings.embedded:
        print(
            "embedded mode: in-memory state, no Redis, no Kafka (set RTG_REDIS_URL for production)",
            flush=True,
        )
        if settings.uses_dev_secret:
            print(
                "dev JWT secret in use; get a token with:\n"
                "  realtime-gateway token --sub u1 --role customer\n"
                f"then open {url}/ and connect to /client with it",
                flush=True,
            )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Readiness false, new sockets refused, clients moved elsewhere, within RTG_DRAIN_SECONDS.
    await drain(gateway, app)
    await runner.cleanup()


def _run(coro_factory: Settings) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is absent on Windows only
        asyncio.run(_serve(coro_factory))
    else:
        uvloop.run(_serve(coro_factory))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="realtime-gateway", description="Realtime Socket.IO gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the gateway (settings from RTG_* environment variables)")
    token = sub.add_parser("token", help="print a dev HS256 JWT signed with the configured secret")
    token.add_argument("--sub", required=True, help="user id")
    token.add_argument("--role", required=True, choices=["customer", "porter", "admin", "service"])
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    emit_cli.add_parser(sub)
    args = parser.parse_args(argv)

    settings = _settings_or_exit()
    configure_logging(settings.log_level, instance=settings.instance_id)
    if args.command == "token":
        secret = settings.effective_jwt_secret
        if secret is None:
            print("realtime-gateway: token needs RTG_JWT_SECRET (or embedded mode)", file=sys.stderr)
            return 2
        extra = {}
        if settings.jwt_issuer:
            extra["iss"] = settings.jwt_issuer
        if settings.jwt_audience:
            extra["aud"] = settings.jwt_audience[0]
        print(mint_dev_token(secret, args.sub, args.role, ttl=args.ttl, **extra))
        return 0
    if args.command == "emit-event":
        return emit_cli.run(args, settings)
    _run(settings)
    return 0

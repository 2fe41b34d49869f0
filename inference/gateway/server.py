"""Build the gateway from the settings and serve it with uvicorn (`python manage.py gateway`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis
import uvicorn
import uvloop
from django.conf import settings

from inference.gateway import routes as route_config
from inference.gateway.app import GatewayApp
from inference.gateway.callers import CallerStore
from inference.gateway.resp import LeanRedis
from inference.gateway.semantic import SemanticSettings
from inference.gateway.service import Gateway, GatewaySettings
from inference.gateway.telemetry import Telemetry

log = logging.getLogger(__name__)


def route_table() -> route_config.RouteTable:
    """The route table of COSTLINE_GATEWAY_ROUTES (or the defaults); RouteConfigError says what is wrong."""
    config = route_config.load(
        settings.GATEWAY_ROUTES,
        vllm_url=settings.VLLM_URL,
        vllm_embeddings_url=settings.VLLM_EMBEDDINGS_URL,
        openai_base_url=settings.OPENAI_BASE_URL,
        openai_api_key=settings.OPENAI_API_KEY,
        anthropic_base_url=settings.ANTHROPIC_BASE_URL,
        anthropic_api_key=settings.ANTHROPIC_API_KEY,
    )
    return route_config.parse(config, default_timeout_s=settings.GATEWAY_UPSTREAM_TIMEOUT_SECONDS)


def build_app(
    *,
    routes: route_config.RouteTable | None = None,
    otlp_url: str | None = None,
    semantic_settings: SemanticSettings | None = None,
) -> GatewayApp:
    from costline.usage.ingest import conninfo_from_settings

    store = CallerStore(
        conninfo_from_settings(settings.DATABASES["default"]),
        key_cache_seconds=settings.GATEWAY_KEY_CACHE_SECONDS,
    )
    # redis-py serves the semantic cache's scans (`lean` runs what every call runs): a bounded pool that
    # makes a request wait for a free connection (at most 2 s) rather than fail.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.REDIS_URL, max_connections=64, timeout=2, socket_timeout=2, socket_connect_timeout=2
    )
    redis_client = aioredis.Redis(connection_pool=pool)
    lean = LeanRedis(settings.REDIS_URL, timeout_s=2, connect_timeout_s=2)
    telemetry = Telemetry(settings.GATEWAY_OTLP_URL if otlp_url is None else otlp_url)
    gateway = Gateway(
        routes or route_table(),
        store,
        redis_client,
        telemetry,
        None,
        GatewaySettings(fail_open=settings.GATEWAY_FAIL_OPEN, cache_ttl_s=settings.GATEWAY_CACHE_TTL_SECONDS),
        semantic_settings
        or SemanticSettings(
            enabled=settings.GATEWAY_SEMANTIC_CACHE,
            threshold=settings.GATEWAY_SEMANTIC_THRESHOLD,
            model=settings.GATEWAY_SEMANTIC_MODEL,
        ),
        lean=lean,
    )
    app = GatewayApp(gateway, store, max_body_bytes=settings.GATEWAY_MAX_BODY_BYTES)

    async def startup() -> None:
        # Made in the serving event loop, which an aiohttp session belongs to. Connections to upstreams
        # are kept open: a new TCP (and TLS) handshake per call would cost more than the gateway's work.
        gateway.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, limit_per_host=200, keepalive_timeout=60)
        )

    async def shutdown() -> None:
        if gateway.http is not None:
            await gateway.http.close()
        gateway.plain.close()
        await redis_client.aclose()
        await lean.aclose()
        await asyncio.to_thread(telemetry.shutdown)  # flushes the spans still batched

    app.on_startup.append(startup)
    app.on_shutdown.append(shutdown)
    return app


@dataclass
class GatewayServer:
    app: GatewayApp
    sock: socket.socket
    uvicorn: uvicorn.Server | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def serve(self) -> None:
        # No proxy-headers layer: the gateway reads no client address (its callers are known by key).
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=60,
            proxy_headers=False,
            server_header=False,
        )
        self.uvicorn = uvicorn.Server(config)
        await self.uvicorn.serve(sockets=[self.sock])

    def stop(self) -> None:
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True


def build_server(host: str, port: int, **app_options: object) -> GatewayServer:
    from collector.server import bind_socket

    return GatewayServer(build_app(**app_options), bind_socket(host, port))  # type: ignore[arg-type]


def serve(sock: socket.socket, routes: route_config.RouteTable) -> None:
    """Serve the gateway on a bound socket until SIGTERM or SIGINT, in uvloop's event loop (libuv, in
    C): under the pure-Python selector loop the loop's own work was a fifth of the gateway's CPU."""
    server = GatewayServer(build_app(routes=routes), sock)
    # The ~140,000 objects start-up made (Django, the price catalogue) live as long as the process: a
    # full collection that scanned them stopped every call in flight for 90 ms on the development
    # machine. Frozen, collections see only what calls made; and less often, since a call makes a few
    # hundred short-lived objects. The span shipper's thread gives the GIL back within 1 ms.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    sys.setswitchinterval(0.001)
    uvloop.run(server.serve())

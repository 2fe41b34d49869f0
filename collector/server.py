"""Run both OTLP receivers, HTTP (uvicorn) and gRPC, in one asyncio event loop."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass

import uvicorn

from collector.grpc_service import make_server
from collector.http import OtlpHttpApp
from collector.pipeline import Pipeline

logger = logging.getLogger(__name__)


@dataclass
class Ports:
    http: int
    grpc: int


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket; `reuse_port`: one of several on the port, which share its connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets whose proto
    # says TCP, and uvicorn writes a response's head and body apart. With Nagle on, the body waited for
    # the client's delayed ACK: 40 ms per request (measured with bench/gateway.py).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class CollectorServer:
    """Both receivers over one pipeline. `serve()` runs until `stop()` (or a signal, in the main thread)."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        host: str,
        http_port: int,
        grpc_port: int,
        max_body_bytes: int,
        retry_after_seconds: int,
    ) -> None:
        self.pipeline = pipeline
        self.host = host
        self.http_socket = bind_socket(host, http_port)
        self.app = OtlpHttpApp(
            pipeline, max_body_bytes=max_body_bytes, retry_after_seconds=retry_after_seconds
        )
        self.grpc_requested_port = grpc_port
        self.max_body_bytes = max_body_bytes
        self.retry_after_seconds = retry_after_seconds
        self.ports = Ports(http=self.http_socket.getsockname()[1], grpc=grpc_port)
        self.uvicorn: uvicorn.Server | None = None
        self.started = asyncio.Event()

    async def serve(self) -> None:
        grpc_server = make_server(
            self.pipeline, max_message_bytes=self.max_body_bytes, retry_after_seconds=self.retry_after_seconds
        )
        grpc_host = f"[{self.host}]" if ":" in self.host else self.host
        self.ports.grpc = grpc_server.add_insecure_port(f"{grpc_host}:{self.grpc_requested_port}")
        if self.ports.grpc == 0:
            raise OSError(f"cannot listen for gRPC on {self.host}:{self.grpc_requested_port}")
        await grpc_server.start()
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            proxy_headers=False,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=30,
            h11_max_incomplete_event_size=64 * 1024,
        )
        self.uvicorn = uvicorn.Server(config)
        self.started.set()
        logger.info("collector listening: OTLP/HTTP :%s, OTLP/gRPC :%s", self.ports.http, self.ports.grpc)
        try:
            await self.uvicorn.serve(sockets=[self.http_socket])
        finally:
            await grpc_server.stop(grace=5)

    def stop(self) -> None:
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True

import asyncio
import gc
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from costline.usage.ingest import build_collector


class Command(BaseCommand):
    help = "Run the OTLP collector: OTLP/HTTP (POST /v1/traces) and OTLP/gRPC (TraceService/Export)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.COLLECTOR_HTTP_HOST, help="interface to listen on")
        parser.add_argument(
            "--http-port",
            type=int,
            default=settings.COLLECTOR_HTTP_PORT,
            help="OTLP/HTTP port (default 4318)",
        )
        parser.add_argument(
            "--grpc-port",
            type=int,
            default=settings.COLLECTOR_GRPC_PORT,
            help="OTLP/gRPC port (default 4317)",
        )

    def handle(self, *args: object, **options: object) -> None:
        server = build_collector(
            host=str(options["host"]),
            http_port=int(str(options["http_port"])),
            grpc_port=int(str(options["grpc_port"])),
        )
        self.stdout.write(
            f"Costline collector: OTLP/HTTP on :{server.ports.http} (POST /v1/traces), OTLP/gRPC on "
            f":{server.ports.grpc if server.ports.grpc else options['grpc_port']}"
        )
        # An export allocates ~50,000 short-lived objects; with the default threshold the cyclic GC
        # would run ~70 times per export and re-scan the long-lived heap (Django, the price catalogue)
        # each time it reaches the oldest generation. Freeze what start-up built; collect less often.
        sys.setswitchinterval(0.001)  # CPU work runs on a thread; the loop must get the GIL back quickly
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        asyncio.run(server.serve())

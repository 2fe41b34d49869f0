import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.gateway.routes import RouteConfigError
from inference.gateway.server import build_server


class Command(BaseCommand):
    help = "Run the inference gateway: the OpenAI API on port 8100, in front of vLLM and external APIs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.GATEWAY_HOST, help="interface to listen on")
        parser.add_argument("--port", type=int, default=settings.GATEWAY_PORT, help="port (default 8100)")

    def handle(self, *args: object, **options: object) -> None:
        try:
            server = build_server(str(options["host"]), int(str(options["port"])))
        except RouteConfigError as exc:
            raise CommandError(f"COSTLINE_GATEWAY_ROUTES: {exc}") from exc
        models = ", ".join(server.app.gateway.routes.models())
        self.stdout.write(f"Costline gateway: OpenAI API on :{server.port} (/v1/...); models: {models}")
        asyncio.run(server.serve())

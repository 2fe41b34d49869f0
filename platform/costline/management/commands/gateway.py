from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.gateway import server, workers
from inference.gateway.routes import RouteConfigError


class Command(BaseCommand):
    help = "Run the inference gateway: the OpenAI API on port 8100, in front of vLLM and external APIs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.GATEWAY_HOST, help="interface to listen on")
        parser.add_argument("--port", type=int, default=settings.GATEWAY_PORT, help="port (default 8100)")
        parser.add_argument(
            "--workers",
            type=int,
            default=settings.GATEWAY_WORKERS,
            help="processes sharing the port, one core each (default COSTLINE_GATEWAY_WORKERS, 1)",
        )

    def handle(self, *args: object, **options: object) -> None:
        count = int(str(options["workers"]))
        if count < 1:
            raise CommandError(f"--workers must be 1 or more; got {count}")
        try:
            routes = server.route_table()  # parsed once, here, for every worker
        except RouteConfigError as exc:
            raise CommandError(f"COSTLINE_GATEWAY_ROUTES: {exc}") from exc
        models = ", ".join(routes.models())
        host, port = str(options["host"]), int(str(options["port"]))
        sockets = workers.reuse_port_sockets(host, port, count)
        where = f":{sockets[0].getsockname()[1]}"
        self.stdout.write(
            f"Costline gateway: OpenAI API on {where} (/v1/...), {count} worker{'s' * (count > 1)}; "
            f"models: {models}"
        )
        self.stdout.flush()
        if count == 1:
            server.serve(sockets[0], routes)
            return
        status = workers.Supervisor(sockets, lambda sock: server.serve(sock, routes)).run()
        if status:
            raise CommandError("the gateway's workers kept failing at start; see the log above")

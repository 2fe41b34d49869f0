import os
import signal
import sys
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from costline.celery import QUEUES
from costline.launcher import (
    ChildExited,
    DemoCredentials,
    PortBusy,
    Process,
    Supervisor,
    ensure_demo_credentials,
    fill_demo,
    reachable_host,
)
from costline.settings import env_int
from inference.vllm.models import CHAT_MODEL_NAME, EMBEDDING_MODEL_NAME, unavailable_reason

# The first start of the embedded PostgreSQL and the collector's price catalogue take a few seconds on
# a laptop; a minute means something is wrong.
READY_TIMEOUT_SECONDS = 60.0
DEMO_DAYS = 30


class Command(BaseCommand):
    help = (
        "Run Costline locally until Ctrl-C: seed the demo organisation (30 days of traffic on the first "
        "start, topped up later), start the collector, the web app and the Celery worker and beat, print "
        "their URLs, the demo sign-in and credentials. `make run` migrates first, then calls this."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--web-port",
            type=int,
            default=env_int("COSTLINE_WEB_PORT", 8000, minimum=1),
            help="port of the web app on 127.0.0.1 (default: COSTLINE_WEB_PORT, else 8000)",
        )
        parser.add_argument(
            "--demo-days",
            type=int,
            default=env_int("COSTLINE_DEMO_DAYS", DEMO_DAYS, minimum=0),
            help=f"days of demo traffic to fill in (default: COSTLINE_DEMO_DAYS, else {DEMO_DAYS}; 0: none)",
        )

    def handle(self, *args: object, **options: object) -> None:
        web_port = int(str(options["web_port"]))
        demo = ensure_demo_credentials(settings.DATA_DIR / "demo-credentials.json")
        demo_days = int(str(options["demo_days"]))
        if demo_days:
            try:
                run = fill_demo(demo, days=demo_days, progress=self.stdout.write)
            except KeyboardInterrupt:
                raise CommandError(
                    "stopped while filling the demo organisation; the next start adds what is missing"
                ) from None
            self.stdout.write(
                f"Demo traffic: {run.calls_stored:,} new calls in {run.ingest_seconds:.1f} s, "
                f"rolled up in {run.rollup_seconds:.1f} s."
            )
        connections.close_all()  # the children open their own; this process only supervises from here

        python, manage = sys.executable, str(settings.BASE_DIR / "manage.py")
        http_port, grpc_port = settings.COLLECTOR_HTTP_PORT, settings.COLLECTOR_GRPC_PORT
        collector_host = reachable_host(settings.COLLECTOR_HTTP_HOST)
        web = [python, "-m", "gunicorn", "costline.wsgi:application", "--bind", f"127.0.0.1:{web_port}"]
        web += ["--workers", "2", "--access-logfile", "-"]
        celery = [python, "-m", "celery", "--app", "costline"]
        worker = [*celery, "worker", "--queues", ",".join(QUEUES), "--concurrency", "2", "--loglevel", "INFO"]
        supervisor = Supervisor(
            [
                Process("collector", [python, manage, "collector"], (http_port, grpc_port), collector_host),
                Process("web", web, (web_port,)),
                Process("worker", worker),
                # Its schedule file is settings.CELERY_BEAT_SCHEDULE_FILENAME, under .costline/.
                Process("beat", [*celery, "beat", "--loglevel", "INFO"]),
                Process("gateway", [python, manage, "gateway"], (settings.GATEWAY_PORT,)),
                *vllm_processes(python, manage),
            ],
            # DATABASE_URL and REDIS_URL are in the environment: set by the user, or exported by the
            # settings when they started the embedded PostgreSQL and Redis, which this process holds
            # until the children are stopped.
            env={**os.environ, "PYTHONUNBUFFERED": "1", **vllm_env(demo)},
            cwd=settings.BASE_DIR,
            output=sys.stdout,
        )

        def stop(signum: int, frame: FrameType | None) -> None:
            supervisor.request_stop()

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, stop)
        try:
            supervisor.start()
            if supervisor.wait_ready(READY_TIMEOUT_SECONDS):
                ports = {"web_port": web_port, "http_port": http_port, "grpc_port": grpc_port}
                supervisor.announce(banner(demo, **ports, vllm=vllm_banner()))
                supervisor.wait()
        except (ChildExited, PortBusy, TimeoutError) as exc:
            raise CommandError(str(exc)) from None
        finally:
            supervisor.stop()
        self.stdout.write("Costline stopped.")


def banner(demo: DemoCredentials, *, web_port: int, http_port: int, grpc_port: int, vllm: str = "") -> str:
    web = f"http://localhost:{web_port}"
    rule = "-" * 78
    return f"""{rule}
Costline is ready.

  Web app       {web}/  (REST API under /api/v1/)
  Sign in       {web}/accounts/login/  as {demo.email}, password {demo.password}
  OTLP/HTTP     http://localhost:{http_port}  (POST /v1/traces)
  OTLP/gRPC     localhost:{grpc_port}
  Worker, beat  Celery on {_hide_password(settings.REDIS_URL)}
  Organisation  {demo.organization_name} (id {demo.organization_id}): {web}/o/{demo.slug}/
  Ingest key    {demo.ingest_key}
  API token     {demo.api_token}
  Gateway       http://localhost:{settings.GATEWAY_PORT}/v1  (OpenAI API), key {demo.gateway_key}
{vllm}
Send traces from any OpenTelemetry SDK:
  export OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:{http_port}
  export OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer%20{demo.ingest_key}"
List the calls Costline stored, newest first:
  curl -H "Authorization: Bearer {demo.api_token}" {web}/api/v1/calls

The demo credentials are kept in {settings.DATA_DIR / "demo-credentials.json"}. Ctrl-C stops everything.
{rule}"""


def vllm_processes(python: str, manage: str) -> list[Process]:
    """The vLLM tier's servers, when the inference extra is installed and COSTLINE_VLLM is not off.

    They answer only after loading (40–105 s on 2 cores), so they declare no ports: Costline is ready
    without them, and each prints "vLLM is ready" when it answers. `manage.py vllm` checks its port.
    """
    if not settings.VLLM_ENABLED or unavailable_reason() is not None:
        return []
    processes = [Process("vllm", [python, manage, "vllm"])]
    if settings.VLLM_EMBEDDINGS_ENABLED:
        processes.append(Process("vllm-embed", [python, manage, "vllm", "--embeddings"]))
    return processes


def vllm_env(demo: DemoCredentials) -> dict[str, str]:
    # vLLM's own spans are stored in the demo organisation unless another key was configured.
    return {"COSTLINE_VLLM_INGEST_KEY": settings.VLLM_INGEST_KEY or demo.ingest_key}


def vllm_banner() -> str:
    """What the banner says about vLLM: where it answers once loaded, or why it is not running."""
    if not settings.VLLM_ENABLED:
        return "  vLLM          off (COSTLINE_VLLM=0)\n"
    reason = unavailable_reason()
    if reason is not None:
        return f"  vLLM          not started: {reason}\n"
    port = settings.VLLM_PORT
    lines = f"  vLLM          http://localhost:{port}/v1  {CHAT_MODEL_NAME} (loads in 40–105 s)\n"
    if settings.VLLM_EMBEDDINGS_ENABLED:
        embeddings = settings.VLLM_EMBEDDINGS_PORT
        lines += f"  Embeddings    http://localhost:{embeddings}/v1  {EMBEDDING_MODEL_NAME} (vLLM)\n"
    return lines


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))

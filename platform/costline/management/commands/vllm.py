import signal
from pathlib import Path
from types import FrameType

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.vllm.launch import SERVICE_NAME, Tracing, plan_launch
from inference.vllm.models import ModelMissing
from inference.vllm.profiles import PROFILES, embeddings_profile, get_profile
from inference.vllm.server import ServerFailed, VllmServer


class Stop(Exception):
    """SIGTERM (from `make run`'s supervisor) or SIGHUP: stop vLLM and return."""


class Command(BaseCommand):
    help = (
        "Run the vLLM OpenAI server with a launch profile (README, 'Inference tier (vLLM)'): the bundled "
        "SmolLM2-135M-Instruct on port 8200, or with --embeddings all-MiniLM-L6-v2 on 8201. Prints "
        "vLLM's log while it loads and a line when it answers; Ctrl-C stops it. Needs `make inference`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--profile",
            default=settings.VLLM_PROFILE,
            choices=sorted(PROFILES),
            help="engine settings (default: COSTLINE_VLLM_PROFILE, else cpu-interactive); with --embeddings "
            "only its hardware counts",
        )
        parser.add_argument("--port", type=int, help="port (default: COSTLINE_VLLM_PORT / _EMBEDDINGS_PORT)")
        parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
        parser.add_argument(
            "--model",
            type=Path,
            help="a Hugging Face model folder (default: COSTLINE_VLLM_MODEL, else bundled)",
        )
        parser.add_argument(
            "--embeddings", action="store_true", help="serve the embedding model (/v1/embeddings) instead"
        )
        parser.add_argument(
            "--enforce-eager",
            action="store_true",
            default=settings.VLLM_ENFORCE_EAGER,
            help="skip torch.compile: faster start, fewer tokens/s (default: COSTLINE_VLLM_ENFORCE_EAGER)",
        )

    def handle(self, *args: object, **options: object) -> None:
        profile = get_profile(str(options["profile"]))
        embeddings = bool(options["embeddings"])
        if embeddings:
            profile = embeddings_profile(profile.hardware)
        default_port = settings.VLLM_EMBEDDINGS_PORT if embeddings else settings.VLLM_PORT
        port = default_port if options["port"] is None else int(str(options["port"]))
        model = options["model"]
        if model is None and settings.VLLM_MODEL and not embeddings:
            model = Path(settings.VLLM_MODEL)
        tracing = None
        if settings.VLLM_INGEST_KEY:
            endpoint = f"http://127.0.0.1:{settings.COLLECTOR_HTTP_PORT}/v1/traces"
            # Its own service name: vLLM's spans do not say whether a request was a chat or an embedding.
            service = f"{SERVICE_NAME}-embeddings" if embeddings else SERVICE_NAME
            tracing = Tracing(endpoint=endpoint, ingest_key=settings.VLLM_INGEST_KEY, service_name=service)
        try:
            launch = plan_launch(
                profile,
                embeddings=embeddings,
                model=model if isinstance(model, Path) else None,
                port=port,
                host=str(options["host"]),
                tracing=tracing,
                enforce_eager=True if options["enforce_eager"] else None,
            )
        except (ModelMissing, ValueError) as exc:
            raise CommandError(str(exc)) from None

        self.stdout.write(
            f"Starting vLLM: {launch.served_model_name} with profile {profile.name} at {launch.base_url}"
        )
        for note in launch.notes:
            self.stdout.write(f"  {note}")
        self.stdout.write(
            f"  traces to {tracing.endpoint}"
            if tracing
            else "  no traces (COSTLINE_VLLM_INGEST_KEY is empty)"
        )

        def stop(signum: int, frame: FrameType | None) -> None:
            raise Stop

        previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
        # Its output is this command's: vLLM's own log is the loading progress. It stays in this process
        # group, so the supervisor of `make run` stopping the group stops vLLM too.
        server = VllmServer(launch, own_session=False)
        try:
            server.start()
            seconds = server.wait_ready(progress=self.stdout.write)
            self.stdout.write(f"vLLM is ready at {launch.base_url} after {seconds:.0f} s")
            returncode = server.wait()
            raise CommandError(f"vLLM exited with status {returncode}")
        except ServerFailed as exc:
            raise CommandError(str(exc)) from None
        except (Stop, KeyboardInterrupt):
            self.stdout.write("Stopping vLLM ...")
        finally:
            server.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

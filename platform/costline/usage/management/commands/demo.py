from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from costline.usage.demo import (
    DEFAULT_DAYS,
    DEFAULT_SEED,
    DEMO_EMAIL,
    DEMO_NAME,
    NotADemoOrganization,
    ensure_demo_organization,
    ensure_demo_user,
    generate_demo,
    reset_demo_data,
)


class Command(BaseCommand):
    help = (
        "Create (or top up) a demo organisation with weeks of realistic LLM traffic, sent through the "
        "collector's ingest path and rolled up, and a demo sign-in (demo@costline.local) that owns it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--name", default=DEMO_NAME, help=f"the organisation's name (default {DEMO_NAME!r})"
        )
        parser.add_argument(
            "--days",
            type=int,
            default=DEFAULT_DAYS,
            help=f"days of traffic up to now (default {DEFAULT_DAYS}, at most the raw retention)",
        )
        parser.add_argument(
            "--seed", type=int, default=DEFAULT_SEED, help="the same seed draws the same traffic (default 4)"
        )
        parser.add_argument(
            "--reset",
            action="store_true",
            help="delete the organisation's calls and settings first, then refill",
        )

    def handle(self, *args: object, **options: object) -> None:
        days, seed = int(str(options["days"])), int(str(options["seed"]))
        if days < 1:
            raise CommandError("--days must be at least 1")
        try:
            with transaction.atomic():
                org = ensure_demo_organization(str(options["name"]), only_demo=True)
                password = ensure_demo_user(org)
        except NotADemoOrganization as exc:
            raise CommandError(str(exc)) from None
        if options["reset"]:
            reset_demo_data(org)
            self.stdout.write(f"Deleted the calls, rollups, projects and price overrides of {org.name}.")
        run = generate_demo(org, days=days, seed=seed, progress=self.stdout.write)
        if run.hours == 0:
            self.stdout.write(f"{org.name} already has its demo traffic up to now.")
        self.stdout.write(
            f"{org.name} (/o/{org.slug}/): {run.calls_stored:,} new calls stored "
            f"({run.calls_sent:,} sent in {run.hours:,} hours) in {run.ingest_seconds:.1f} s, "
            f"rolled up in {run.rollup_seconds:.1f} s."
        )
        if run.rejected_spans:
            self.stderr.write(f"The collector rejected {run.rejected_spans:,} spans; see the warnings above.")
        if password is not None:
            self.stdout.write(f"Sign in as {DEMO_EMAIL} with the password {password} (shown once).")
        else:
            self.stdout.write(
                f"Sign in as {DEMO_EMAIL} (its password was shown when it was created; "
                f"`python manage.py changepassword {DEMO_EMAIL}` sets a new one)."
            )

import json

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from costline.tenancy.actions import create_organization, issue_api_token, issue_ingest_key


class Command(BaseCommand):
    help = "Create an organisation with an ingest key and an API token (shown once) for headless set-up."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the organisation's name")
        parser.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
        parser.add_argument("--time-zone", default="UTC", help="IANA time zone for budget periods and charts")

    @transaction.atomic
    def handle(self, *args: object, **options: object) -> None:
        org = create_organization(str(options["name"]), time_zone=str(options["time_zone"]))
        ingest = issue_ingest_key(org, "default ingest key")
        token = issue_api_token(org, "default API token")
        result = {
            "tenant": {"id": org.id, "name": org.name, "slug": org.slug},
            "ingest_key": ingest.plaintext,
            "api_token": token.plaintext,
        }
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(f"Organisation {org.name} ({org.slug}) created.")
        self.stdout.write(f"Ingest key (shown once): {ingest.plaintext}")
        self.stdout.write(f"API token  (shown once): {token.plaintext}")

"""General, Projects and Price overrides settings: admins change them, everyone else reads them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from costline.tenancy.models import Organization, Project, Role
from costline.usage.models import PriceOverride, RepriceRequest
from tests.platform.tenancy.conftest import Member

SignIn = Callable[..., Member]


def test_settings_opens_on_the_general_page_with_its_left_nav(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    response = admin.client.get(admin.url("settings/"), follow=True)

    html = response.content.decode()
    assert response.redirect_chain[-1][0] == admin.url("settings/general/")
    assert 'class="settings"' in html
    for section in ("general", "projects", "members", "ingest-keys", "api-tokens", "price-overrides"):
        assert f'href="{admin.url(f"settings/{section}/")}"' in html


def test_a_viewer_sees_no_links_to_pages_that_would_refuse_them(sign_in: SignIn) -> None:
    viewer = sign_in(Role.VIEWER)

    html = viewer.client.get(viewer.url("settings/general/")).content.decode()

    assert "ingest-keys/" not in html
    assert "api-tokens/" not in html
    assert "Only admins and owners can change these." in html


def test_an_admin_renames_the_organisation_and_sets_its_time_zone(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    response = admin.client.post(
        admin.url("settings/general/update/"), {"name": "Acme Labs", "time_zone": "Europe/Paris"}, follow=True
    )

    org = Organization.objects.get(id=admin.org.id)
    assert (org.name, org.time_zone) == ("Acme Labs", "Europe/Paris")
    assert "Pages now show times in Europe/Paris" in response.content.decode()


def test_it_refuses_a_time_zone_that_is_not_an_iana_zone(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    response = admin.client.post(
        admin.url("settings/general/update/"), {"name": "Acme", "time_zone": "Mars/Olympus"}
    )

    assert response.status_code == 400
    assert "Mars/Olympus is not an IANA time zone this server knows" in response.content.decode()
    assert Organization.objects.get(id=admin.org.id).time_zone == "UTC"


def test_the_time_zone_list_offers_iana_zones(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    html = admin.client.get(admin.url("settings/general/")).content.decode()

    assert '<option value="America/New_York">' in html
    assert '<option value="UTC" selected>' in html


def test_an_admin_creates_a_project_with_service_patterns(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    response = admin.client.post(
        admin.url("settings/projects/new/"),
        {"name": "Support Bot", "slug": "", "patterns": "support-*\n chat-api , "},
    )

    project = Project.objects.get(organization=admin.org)
    assert response["Location"] == admin.url("settings/projects/")
    assert (project.name, project.slug, project.service_patterns) == (
        "Support Bot",
        "support-bot",
        ["support-*", "chat-api"],
    )
    html = admin.client.get(admin.url("settings/projects/")).content.decode()
    assert 'data-project="support-bot"' in html
    assert "support-*, chat-api" in html


def test_an_admin_edits_a_project(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    project = Project.objects.create(
        organization=admin.org, name="Chat", slug="chat", service_patterns=["chat"]
    )

    admin.client.post(
        admin.url(f"settings/projects/{project.id}/"), {"name": "Chat v2", "slug": "chat-v2", "patterns": ""}
    )

    project.refresh_from_db()
    assert (project.name, project.slug, project.service_patterns) == ("Chat v2", "chat-v2", [])


def test_two_projects_cannot_share_a_slug(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    Project.objects.create(organization=admin.org, name="Chat", slug="chat")

    response = admin.client.post(
        admin.url("settings/projects/new/"), {"name": "Chat", "slug": "", "patterns": ""}
    )

    assert response.status_code == 400
    assert "Another project of this organisation has the slug &#x27;chat&#x27;." in response.content.decode()
    assert Project.objects.filter(organization=admin.org).count() == 1


def test_a_service_pattern_has_no_spaces(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    response = admin.client.post(
        admin.url("settings/projects/new/"), {"name": "Chat", "slug": "", "patterns": "chat api"}
    )

    assert response.status_code == 400
    assert "is not a service pattern" in response.content.decode()


def test_an_admin_adds_a_price_override_and_learns_what_is_re_priced(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN, time_zone="Europe/Paris")

    response = admin.client.post(
        admin.url("settings/price-overrides/new/"),
        {
            "model_pattern": "gpt-4o*",
            "provider": "openai",
            "effective_from": "2025-03-01T00:00",
            "input_per_mtok": "2.25",
            "output_per_mtok": "9",
            "note": "negotiated rate",
        },
        follow=True,
    )

    override = PriceOverride.objects.get(tenant=admin.org)
    assert override.effective_from == datetime(2025, 2, 28, 23, 0, tzinfo=UTC)  # midnight in Paris
    assert (override.input_per_mtok, override.output_per_mtok) == (Decimal("2.25"), Decimal(9))
    assert override.discount_percent is None
    assert "Costs since 1 Mar 2025 are being re-priced." in response.content.decode()
    assert RepriceRequest.objects.filter(tenant=admin.org, since=override.effective_from).exists()
    html = response.content.decode()
    assert 'data-override="gpt-4o*"' in html
    assert "$2.25" in html
    assert "$9<" in html


def test_a_price_override_gives_prices_or_a_discount_not_both(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)

    both = admin.client.post(
        admin.url("settings/price-overrides/new/"),
        {
            "model_pattern": "claude-*",
            "effective_from": "2025-03-01T00:00",
            "input_per_mtok": "3",
            "discount_percent": "10",
        },
    )
    neither = admin.client.post(
        admin.url("settings/price-overrides/new/"),
        {"model_pattern": "claude-*", "effective_from": "2025-03-01T00:00"},
    )
    negative = admin.client.post(
        admin.url("settings/price-overrides/new/"),
        {"model_pattern": "claude-*", "effective_from": "2025-03-01T00:00", "output_per_mtok": "-1"},
    )

    assert both.status_code == neither.status_code == negative.status_code == 400
    assert "Give either prices per million tokens or a discount, not both." in both.content.decode()
    assert "Give at least one price per million tokens, or a discount percentage." in neither.content.decode()
    assert "Prices cannot be negative." in negative.content.decode()
    assert not PriceOverride.objects.filter(tenant=admin.org).exists()


def test_moving_an_override_earlier_re_prices_from_the_earlier_date(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    override = PriceOverride.objects.create(
        tenant=admin.org,
        model_pattern="gpt-4o*",
        effective_from=datetime(2025, 3, 10, tzinfo=UTC),
        discount_percent=10,
    )

    response = admin.client.post(
        admin.url(f"settings/price-overrides/{override.id}/"),
        {"model_pattern": "gpt-4o*", "effective_from": "2025-03-05T12:30", "discount_percent": "15"},
        follow=True,
    )

    override.refresh_from_db()
    assert override.discount_percent == Decimal(15)
    assert "Costs since 5 Mar 2025 12:30 are being re-priced." in response.content.decode()


def test_deleting_an_override_re_prices_its_calls(sign_in: SignIn) -> None:
    admin = sign_in(Role.ADMIN)
    override = PriceOverride.objects.create(
        tenant=admin.org,
        model_pattern="gpt-4o*",
        effective_from=datetime(2025, 3, 10, tzinfo=UTC),
        discount_percent=10,
    )
    RepriceRequest.objects.all().delete()

    response = admin.client.post(admin.url(f"settings/price-overrides/{override.id}/delete/"), follow=True)

    assert not PriceOverride.objects.filter(id=override.id).exists()
    assert "Costs since 10 Mar 2025 are being re-priced." in response.content.decode()
    assert RepriceRequest.objects.filter(tenant=admin.org).count() == 1


def test_a_viewer_reads_projects_members_and_overrides(sign_in: SignIn) -> None:
    viewer = sign_in(Role.VIEWER)
    Project.objects.create(organization=viewer.org, name="Chat", slug="chat")
    PriceOverride.objects.create(
        tenant=viewer.org,
        model_pattern="gpt-4o*",
        effective_from=datetime(2025, 3, 10, tzinfo=UTC),
        discount_percent=10,
    )

    pages = {
        path: viewer.client.get(viewer.url(f"settings/{path}/"))
        for path in ("general", "projects", "members", "price-overrides")
    }

    assert {path: r.status_code for path, r in pages.items()} == dict.fromkeys(pages, 200)
    assert 'data-project="chat"' in pages["projects"].content.decode()
    assert "New project" not in pages["projects"].content.decode()
    assert 'data-override="gpt-4o*"' in pages["price-overrides"].content.decode()
    assert 'data-action="delete"' not in pages["price-overrides"].content.decode()

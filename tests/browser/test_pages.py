"""What a person does in the web app, in a real browser: sign in, read the charts, explore, export."""

from __future__ import annotations

import csv
import io
import re

import pytest
from playwright.sync_api import Page, expect

from costline.tenancy.keys import INGEST_KEY_PREFIX
from costline.tenancy.models import IngestKey
from costline.usage.models import LLMCall
from tests.browser.conftest import PASSWORD, SignedIn, path_of, sign_in

pytestmark = pytest.mark.browser

# Plotly draws a figure as <svg class="main-svg"> inside its div, and one <g class="trace"> per series.
DRAWN = ".main-svg"
SERIES = ".main-svg .trace"


def test_it_signs_in_through_the_form_and_lands_on_the_organisation(page: Page, member: SignedIn) -> None:
    member.page.context.clear_cookies()

    member.open("explore/")
    assert "/accounts/login/" in page.url  # signed out: sent to sign in first
    form = page.locator("form:has(input[name=password])")
    form.locator("input[name=username]").fill(member.email)
    form.locator("input[name=password]").fill("not the password")
    form.locator("[type=submit]").click()
    expect(page.locator("form:has(input[name=password])")).to_be_visible()
    assert "/accounts/login/" in page.url

    sign_in(page, member.base_url, member.email, PASSWORD)

    assert path_of(page.url).startswith(f"/o/{member.org.slug}/")
    expect(page.locator("body")).to_contain_text(member.org.name)


def test_it_draws_the_spend_chart_and_redraws_it_for_another_range(traffic: SignedIn) -> None:
    page = traffic.page
    traffic.open()

    chart = page.locator("#spend-chart")
    expect(chart.locator(DRAWN).first).to_be_visible()
    assert chart.locator(SERIES).count() > 1  # stacked by model
    expect(page.locator("[data-kpi=spend] .value")).to_contain_text("$")
    expect(page.locator("[data-kpi=requests] .value")).not_to_have_text("0")

    page.locator("button[name=range][value='30d']").click()

    page.wait_for_url(re.compile(r"[?&]range=30d"))
    expect(page.locator("button[name=range][value='30d']")).to_have_attribute("aria-pressed", "true")
    expect(chart.locator(DRAWN).first).to_be_visible()
    assert chart.locator(SERIES).count() > 1


def test_it_groups_explore_by_model_with_a_row_per_model(traffic: SignedIn) -> None:
    page = traffic.page
    traffic.open("explore/")
    models = set(LLMCall.objects.filter(tenant=traffic.org).values_list("model", flat=True))

    form = page.locator("#explore-form")
    form.locator("select[name=group_by]").select_option(["model"])
    form.locator("select[name=metric]").select_option("cost_usd")
    form.locator("[type=submit]").click()

    page.wait_for_url(re.compile(r"[?&]group_by=model"))
    expect(page.locator("#explore-chart").locator(DRAWN).first).to_be_visible()
    rows = page.locator("#explore-table tbody tr")
    expect(rows).to_have_count(len(models))
    shown = {rows.nth(i).locator("td").first.inner_text().strip() for i in range(len(models))}
    assert shown == models
    assert "group_by=model" in (page.locator("#explore-csv").get_attribute("href") or "")


def test_it_opens_a_call_from_the_list(traffic: SignedIn) -> None:
    page = traffic.page
    traffic.open("calls/")

    first = page.locator("#calls-table tbody tr").first
    trace_id = first.get_attribute("data-trace-id")
    first.locator("a").first.click()

    page.wait_for_url(re.compile(rf"/calls/{trace_id}/"))
    expect(page.locator("#call-detail")).to_be_visible()
    expect(page.locator("#cost-breakdown")).to_be_visible()
    expect(page.locator("#trace-calls tbody tr").first).to_be_visible()


def test_it_creates_an_ingest_key_shown_once_and_revokes_it(member: SignedIn) -> None:
    page = member.page
    member.open("settings/ingest-keys/")

    form = page.locator("#new-ingest-key")
    form.locator("input[name=name]").fill("from the browser")
    form.locator("[type=submit]").click()

    secret = page.locator("#new-secret")
    expect(secret).to_have_text(re.compile(rf"^\s*{INGEST_KEY_PREFIX}\S+\s*$"))
    assert IngestKey.objects.active().filter(organization=member.org, name="from the browser").count() == 1
    row = page.locator("#ingest-keys tbody tr", has_text="from the browser")
    row.locator("button[data-action=revoke]").click()

    expect(page.locator("#ingest-keys tbody tr", has_text="from the browser")).to_contain_text("Revoked")
    expect(page.locator("#new-secret")).to_have_count(0)  # shown once, never again
    assert not IngestKey.objects.active().filter(organization=member.org).exists()


def test_it_downloads_a_focus_export_of_the_range(traffic: SignedIn) -> None:
    page = traffic.page
    traffic.open("?range=7d")

    link = page.locator("#focus-export")
    assert "range=7d" in (link.get_attribute("href") or "")
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value

    text = download.path().read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert download.suggested_filename.endswith(".csv")
    assert rows
    assert {"BilledCost", "EffectiveCost", "ChargePeriodStart", "ServiceName"} <= set(rows[0])
    assert any(float(row["BilledCost"]) > 0 for row in rows)

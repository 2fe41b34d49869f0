"""Budgets in a real browser: create one with the form, read its burn-down chart, pause it."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from costline.budgets.models import Budget
from tests.browser.conftest import SignedIn, in_a_thread

pytestmark = pytest.mark.browser


def test_it_creates_a_budget_and_draws_its_burn_down(member: SignedIn) -> None:
    page = member.page
    member.open("budgets/")
    page.locator("#new-budget").click()
    form = page.locator("#budget-form")
    form.locator("input[name=name]").fill("Everything")
    form.locator("input[name=amount_usd]").fill("250")
    form.locator("select[name=action]").select_option("throttle")
    form.locator("input[name=throttle_rpm]").fill("120")
    form.locator("[type=submit]").click()

    expect(page.locator("h1")).to_have_text("Everything")
    chart = page.locator("#burn-down")
    expect(chart.locator(".main-svg").first).to_be_visible()
    assert chart.locator(".main-svg .trace").count() >= 3  # actual, limit, 50% and 80% lines
    expect(page.locator("#audit-log")).to_contain_text("Created")

    page.locator("#pause").click()
    expect(page.locator(".badge[data-state=paused]")).to_be_visible()
    budget = in_a_thread(lambda: Budget.objects.get(organization=member.org))
    assert (budget.paused, budget.throttle_rpm) == (True, 120)

"""Browser tests: Playwright drives Debian's Chromium (/usr/bin/chromium) against the live server.

Nothing is downloaded: Playwright's own browser builds are never installed, it launches the system
Chromium (`make test` installs Debian's `chromium` package when it is missing; without it these tests
are skipped and say how to install it). The server is pytest-django's `live_server`, which makes each
test transactional: what a test creates is committed, so the server's threads see it, and flushed
after it.

A member signs in through the real sign-in form; `traffic` fills their organisation with a day of the
demo traffic, sent through the collector's ingest and rolled up, as `manage.py demo` does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.db import connections
from playwright.sync_api import Browser, Page, sync_playwright

from costline.tenancy.models import Organization

CHROMIUM = Path(os.environ.get("COSTLINE_CHROMIUM", "/usr/bin/chromium"))
PASSWORD = "correct horse battery staple"
TIMEOUT_MS = 15_000  # a page of the live server on a busy 2-core CI machine: well under a second

T = TypeVar("T")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module's tests.

    Module-scoped, not session-scoped: while Playwright runs, the main thread has a running asyncio
    loop, and Django refuses database calls from a thread with one (SynchronousOnlyOperation). The
    tests' own calls are plain synchronous ones, so they are allowed only while the browser lives;
    the tests that run after these get Django's check back.
    """
    if not CHROMIUM.exists():
        pytest.skip(
            f"Debian's Chromium is not installed ({CHROMIUM} is missing): `make test` installs it when it "
            "runs as root or with password-less sudo; else run `sudo apt-get install chromium`"
        )
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True, locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@dataclass
class SignedIn:
    page: Page  # signed in
    base_url: str  # the live server's
    org: Organization
    email: str

    def url(self, path: str = "") -> str:
        """The URL of one of the organisation's pages: member.url("explore/")."""
        return f"{self.base_url}/o/{self.org.slug}/{path}"

    def open(self, path: str = "") -> None:
        self.page.goto(self.url(path))


def sign_in(page: Page, base_url: str, email: str, password: str) -> None:
    """Sign in through the sign-in form, as a person does."""
    page.goto(f"{base_url}/accounts/login/")
    form = page.locator("form:has(input[name=password])")
    form.locator("input[name=username]").fill(email)
    form.locator("input[name=password]").fill(password)
    form.locator("[type=submit]").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


@pytest.fixture
def member(page: Page, live_server: Any) -> SignedIn:
    """An owner of a new organisation, signed in through the sign-in form."""
    from costline.tenancy.actions import create_organization
    from costline.tenancy.models import Membership, Role, User

    org = create_organization("Browser Test Org")
    user = User.objects.create_user(f"owner@{org.slug}.example", PASSWORD)
    Membership.objects.create(organization=org, user=user, role=Role.OWNER)
    sign_in(page, live_server.url, user.email, PASSWORD)
    return SignedIn(page, live_server.url, org, user.email)


def in_a_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn` off the main thread, where Playwright's event loop runs (asyncio.run needs a thread
    without one); on connections of its own, closed after."""

    def run() -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@pytest.fixture
def traffic(member: SignedIn) -> SignedIn:
    """The member's organisation with the last day of demo traffic, ingested and rolled up."""
    from costline.usage.demo import generate_demo

    run = in_a_thread(generate_demo, member.org, days=1)
    assert run.calls_stored > 1000
    return member


def path_of(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)

"""Signing in with an email and a password, signing out, and where `/` leads."""

from __future__ import annotations

from collections.abc import Callable

from django.test import Client

from costline.tenancy.models import Role
from tests.platform.tenancy.conftest import PASSWORD, Member

SignIn = Callable[..., Member]


def test_it_signs_in_with_email_and_password_and_opens_the_organisation(sign_in: SignIn) -> None:
    member = sign_in(Role.VIEWER)
    client = Client()

    response = client.post("/accounts/login/", {"username": member.user.email, "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/")["Location"] == member.url()


def test_it_reads_the_email_whatever_its_case(sign_in: SignIn) -> None:
    member = sign_in()
    client = Client()

    response = client.post(
        "/accounts/login/", {"username": f"  {member.user.email.upper()} ", "password": PASSWORD}
    )

    assert response.status_code == 302


def test_it_refuses_a_wrong_password_and_says_so(sign_in: SignIn) -> None:
    member = sign_in()
    client = Client()

    response = client.post("/accounts/login/", {"username": member.user.email, "password": "not it"})

    assert response.status_code == 200
    assert "Please enter a correct email and password" in response.content.decode()
    assert client.get("/").status_code == 302
    assert client.get("/")["Location"].startswith("/accounts/login/")


def test_it_returns_to_the_page_asked_for_after_signing_in(sign_in: SignIn) -> None:
    member = sign_in()
    client = Client()
    asked = member.url("settings/members/")

    to_login = client.get(asked)
    response = client.post(
        to_login["Location"], {"username": member.user.email, "password": PASSWORD, "next": asked}
    )

    assert to_login["Location"] == f"/accounts/login/?next={asked}"
    assert response["Location"] == asked


def test_the_sign_in_page_has_the_fields_browsers_and_tests_expect(client: Client) -> None:
    html = client.get("/accounts/login/").content.decode()

    assert 'name="username"' in html
    assert 'name="password"' in html
    assert 'type="submit"' in html
    assert 'href="/accounts/password_reset/"' in html


def test_a_signed_in_person_opening_the_sign_in_page_goes_on(sign_in: SignIn) -> None:
    member = sign_in()

    response = member.client.get("/accounts/login/")

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_signing_out_ends_the_session(sign_in: SignIn) -> None:
    member = sign_in()
    assert member.client.get(member.url("settings/general/")).status_code == 200

    response = member.client.post("/accounts/logout/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert member.client.get(member.url("settings/general/")).status_code == 302


def test_every_page_has_a_sign_out_button(sign_in: SignIn) -> None:
    member = sign_in()

    html = member.client.get(member.url("settings/general/")).content.decode()

    assert 'action="/accounts/logout/"' in html
    assert "Sign out" in html


def test_a_person_changes_their_password(sign_in: SignIn) -> None:
    member = sign_in()

    response = member.client.post(
        "/accounts/password_change/",
        {
            "old_password": PASSWORD,
            "new_password1": "a fresh long passphrase",
            "new_password2": "a fresh long passphrase",
        },
    )

    assert response.status_code == 302
    assert Client().login(username=member.user.email, password="a fresh long passphrase")
    assert member.client.get(member.url("settings/general/")).status_code == 200  # still signed in here

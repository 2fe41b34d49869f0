"""Password reset by email: the link names the host the request came to, works once, sets the password."""

from __future__ import annotations

from collections.abc import Callable

from django.core import mail
from django.test import Client

from tests.platform.tenancy.conftest import Member, link_in_last_email

SignIn = Callable[..., Member]
NEW_PASSWORD = "a brand new passphrase"


def test_a_person_resets_their_password_through_the_emailed_link(sign_in: SignIn) -> None:
    member = sign_in()
    client = Client(HTTP_HOST="localhost:8123")

    asked = client.post("/accounts/password_reset/", {"email": member.user.email})
    link = link_in_last_email("/accounts/reset/")
    form_page = client.get(link, follow=True)
    set_password = client.post(
        form_page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )

    assert asked["Location"] == "/accounts/password_reset/done/"
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [member.user.email]
    assert link.startswith("http://localhost:8123/accounts/reset/")
    assert "Choose a new password" in form_page.content.decode()
    assert set_password["Location"] == "/accounts/reset/done/"
    assert Client().login(username=member.user.email, password=NEW_PASSWORD)
    signed_in = Client()
    response = signed_in.post("/accounts/login/", {"username": member.user.email, "password": NEW_PASSWORD})
    assert response.status_code == 302
    assert signed_in.get("/")["Location"] == member.url()


def test_the_link_works_only_once(sign_in: SignIn) -> None:
    member = sign_in()
    client = Client()
    client.post("/accounts/password_reset/", {"email": member.user.email})
    link = link_in_last_email("/accounts/reset/")
    first = client.get(link, follow=True)
    client.post(first.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    again = Client().get(link, follow=True)

    assert "This link no longer works" in again.content.decode()


def test_it_sends_nothing_for_an_unknown_address_and_does_not_tell(db: None, client: Client) -> None:
    response = client.post("/accounts/password_reset/", {"email": "nobody@example.com"})

    assert response["Location"] == "/accounts/password_reset/done/"
    assert mail.outbox == []


def test_it_rejects_a_new_password_the_validators_refuse(sign_in: SignIn) -> None:
    member = sign_in()
    client = Client()
    client.post("/accounts/password_reset/", {"email": member.user.email})
    page = client.get(link_in_last_email("/accounts/reset/"), follow=True)

    response = client.post(page.redirect_chain[-1][0], {"new_password1": "123", "new_password2": "123"})

    assert response.status_code == 200
    assert "This password is too short" in response.content.decode()
    assert not Client().login(username=member.user.email, password="123")

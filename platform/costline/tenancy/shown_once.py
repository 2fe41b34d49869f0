"""A new secret shown once, on the page the browser is redirected to after the POST that issued it.

The plaintext has to cross one redirect, but it must never be stored, and sessions live in the
database. So the session keeps the secret XOR a random one-time pad of the same length, and the pad
travels to the browser in a short-lived HttpOnly cookie: the database alone, or the cookie alone, says
nothing about the secret. The page that shows it takes both halves and deletes them, so a reload shows
it no more.
"""

from __future__ import annotations

import base64
import secrets

from django.http import HttpRequest, HttpResponse

PAD_SECONDS = 300  # time to follow the redirect; a pad older than this is useless anyway


def _names(kind: str) -> tuple[str, str]:
    return f"shown_once.{kind}", f"costline_pad_{kind}"


def keep(request: HttpRequest, response: HttpResponse, kind: str, plaintext: str) -> None:
    """Pass `plaintext` to the next page that calls `take(request, kind)`."""
    session_key, cookie = _names(kind)
    secret = plaintext.encode()
    pad = secrets.token_bytes(len(secret))
    request.session[session_key] = base64.b64encode(
        bytes(a ^ b for a, b in zip(secret, pad, strict=True))
    ).decode()
    response.set_cookie(
        cookie,
        base64.urlsafe_b64encode(pad).decode(),
        max_age=PAD_SECONDS,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure(),
    )


def take(request: HttpRequest, kind: str) -> str | None:
    """The secret kept for this page, once; None when there is none (or its cookie did not come back)."""
    session_key, cookie = _names(kind)
    masked = request.session.pop(session_key, None)
    pad = request.COOKIES.get(cookie)
    if masked is None or pad is None:
        return None
    try:
        secret = bytes(
            a ^ b
            for a, b in zip(base64.b64decode(masked), base64.urlsafe_b64decode(pad.encode()), strict=True)
        )
        return secret.decode()
    except (ValueError, UnicodeDecodeError):
        return None  # a pad from an older secret: show nothing rather than garbage


def forget(request: HttpRequest, response: HttpResponse, kind: str) -> None:
    """Delete the pad cookie from the browser once the page that used it is answered."""
    _, cookie = _names(kind)
    if cookie in request.COOKIES:
        response.delete_cookie(cookie, samesite="Lax")

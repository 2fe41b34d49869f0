"""Fixtures for the access and settings pages: signed-in members (shared with the dashboards' tests)."""

from __future__ import annotations

import re

from django.core import mail

from tests.platform.dashboards.conftest import Member, sign_in

__all__ = ["PASSWORD", "Member", "link_in_last_email", "sign_in"]

PASSWORD = "correct horse battery staple"  # what `sign_in` gives every user


def link_in_last_email(path_part: str) -> str:
    """The first link of the last email sent whose path contains `path_part`."""
    assert mail.outbox, "no email was sent"
    body = str(mail.outbox[-1].body)
    match = re.search(rf"https?://\S*{re.escape(path_part)}\S*", body)
    assert match, f"no link with {path_part!r} in the email:\n{body}"
    return match.group(0)

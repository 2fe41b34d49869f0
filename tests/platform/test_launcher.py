"""`make run`: the demo organisation and its credentials file, and the supervision of child processes."""

from __future__ import annotations

import io
import json
import socket
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth import authenticate

from costline.launcher import (
    ChildExited,
    PortBusy,
    Process,
    Supervisor,
    ensure_demo_credentials,
    load_credentials,
)
from costline.management.commands.run import banner
from costline.tenancy.actions import revoke_ingest_key
from costline.tenancy.keys import hash_secret
from costline.tenancy.models import ApiToken, IngestKey, Membership, Organization, Role, User
from tests.conftest import TenantKeys


@pytest.fixture
def credentials_file(tmp_path: Path) -> Path:
    return tmp_path / "costline" / "demo-credentials.json"


def test_it_creates_the_demo_organisation_once(db: None, credentials_file: Path) -> None:
    first = ensure_demo_credentials(credentials_file)
    second = ensure_demo_credentials(credentials_file)

    assert second == first
    assert Organization.objects.filter(name="Demo").count() == 1
    assert IngestKey.objects.filter(organization_id=first.organization_id).count() == 1
    assert ApiToken.objects.filter(organization_id=first.organization_id).count() == 1


def test_it_keeps_working_credentials_in_a_private_file(db: None, credentials_file: Path) -> None:
    issued = ensure_demo_credentials(credentials_file)

    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    assert load_credentials(credentials_file) == issued
    assert json.loads(credentials_file.read_text())["organization_name"] == "Demo"
    assert (
        IngestKey.objects.active().get(secret_hash=hash_secret(issued.ingest_key)).organization.name == "Demo"
    )
    assert (
        ApiToken.objects.active().get(secret_hash=hash_secret(issued.api_token)).organization.name == "Demo"
    )


def test_it_replaces_revoked_secrets_and_keeps_the_rest(db: None, credentials_file: Path) -> None:
    issued = ensure_demo_credentials(credentials_file)
    org = Organization.objects.get(id=issued.organization_id)
    revoke_ingest_key(org, IngestKey.objects.get(secret_hash=hash_secret(issued.ingest_key)).id)

    again = ensure_demo_credentials(credentials_file)

    assert again.organization_id == issued.organization_id
    assert again.api_token == issued.api_token
    assert again.ingest_key != issued.ingest_key
    assert IngestKey.objects.active().filter(secret_hash=hash_secret(again.ingest_key)).exists()
    assert load_credentials(credentials_file) == again


def test_it_reuses_the_demo_organisation_when_the_file_is_lost(db: None, credentials_file: Path) -> None:
    issued = ensure_demo_credentials(credentials_file)
    credentials_file.unlink()

    again = ensure_demo_credentials(credentials_file)

    assert again.organization_id == issued.organization_id
    assert Organization.objects.filter(name="Demo").count() == 1
    assert load_credentials(credentials_file) == again


def test_it_does_not_trust_secrets_of_another_organisation(
    db: None, credentials_file: Path, make_tenant: Callable[..., TenantKeys]
) -> None:
    issued = ensure_demo_credentials(credentials_file)
    other = make_tenant("Not the demo")
    tampered = json.loads(credentials_file.read_text()) | {"api_token": other.api_token}
    credentials_file.write_text(json.dumps(tampered))

    again = ensure_demo_credentials(credentials_file)

    assert again.api_token not in (other.api_token, issued.api_token)
    assert (
        ApiToken.objects.get(secret_hash=hash_secret(again.api_token)).organization_id
        == issued.organization_id
    )


def test_it_issues_fresh_credentials_when_the_file_is_damaged(db: None, credentials_file: Path) -> None:
    credentials_file.parent.mkdir(parents=True)
    credentials_file.write_text("{not json")

    issued = ensure_demo_credentials(credentials_file)

    assert load_credentials(credentials_file) == issued


def test_it_keeps_a_web_sign_in_that_owns_the_demo_organisation(db: None, credentials_file: Path) -> None:
    issued = ensure_demo_credentials(credentials_file)
    again = ensure_demo_credentials(credentials_file)

    assert again.password == issued.password
    assert len(issued.password) >= 16
    user = authenticate(username="demo@costline.local", password=issued.password)
    assert user is not None
    membership = Membership.objects.get(user=user, organization_id=issued.organization_id)
    assert membership.role == Role.OWNER
    assert json.loads(credentials_file.read_text())["password"] == issued.password


def test_it_sets_the_saved_password_again_when_it_was_changed(db: None, credentials_file: Path) -> None:
    issued = ensure_demo_credentials(credentials_file)
    user = User.objects.get(email="demo@costline.local")
    user.set_password("something else entirely")
    user.save()

    again = ensure_demo_credentials(credentials_file)

    assert again.password == issued.password
    assert authenticate(username="demo@costline.local", password=issued.password) is not None


def test_it_issues_a_password_for_a_file_written_before_web_sign_in(db: None, credentials_file: Path) -> None:
    issued = ensure_demo_credentials(credentials_file)
    older = json.loads(credentials_file.read_text())
    del older["email"], older["password"], older["slug"]
    credentials_file.write_text(json.dumps(older))

    again = ensure_demo_credentials(credentials_file)

    assert (again.ingest_key, again.api_token) == (issued.ingest_key, issued.api_token)
    assert again.password
    assert authenticate(username="demo@costline.local", password=again.password) is not None


def test_the_banner_shows_the_web_sign_in_and_the_secrets(db: None, credentials_file: Path) -> None:
    demo = ensure_demo_credentials(credentials_file)

    text = banner(demo, web_port=8123, http_port=4318, grpc_port=4317)

    assert "http://localhost:8123/accounts/login/  as demo@costline.local, password " + demo.password in text
    assert "http://localhost:8123/o/demo/" in text
    assert demo.ingest_key in text
    assert demo.api_token in text


# --- supervision: real child processes, a few tenths of a second each ---------------------------------


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_it_prefixes_output_waits_for_ports_and_stops_every_child() -> None:
    port = free_port()
    # It prints before it listens, so the line is in the pipe before the port answers.
    server = (
        f"import socket, time; print('starting', flush=True); s = socket.create_server(('127.0.0.1', {port}))"
    )
    server += "; time.sleep(60)"
    output = io.StringIO()
    supervisor = Supervisor(
        [Process("web", python(server), (port,)), Process("sleeper", python("import time; time.sleep(60)"))],
        output=output,
    )
    supervisor.start()
    try:
        assert supervisor.wait_ready(timeout=20)
    finally:
        supervisor.stop()

    assert all(child.poll() is not None for child in supervisor.children.values())
    assert "web     | starting\n" in output.getvalue()


def test_it_stops_the_others_when_one_child_dies() -> None:
    output = io.StringIO()
    supervisor = Supervisor(
        [
            Process("sleeper", python("import time; time.sleep(60)")),
            Process("crasher", python("import sys; print('cannot start'); sys.exit(3)")),
        ],
        output=output,
    )
    supervisor.start()
    try:
        with pytest.raises(ChildExited, match="crasher exited with status 3") as exited:
            supervisor.wait()
    finally:
        supervisor.stop()

    assert exited.value.name == "crasher"
    assert supervisor.children["sleeper"].poll() is not None
    assert "crasher | cannot start\n" in output.getvalue()


def test_it_refuses_a_port_that_something_else_answers_on() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        supervisor = Supervisor(
            [Process("web", python("pass"), (busy.getsockname()[1],))], output=io.StringIO()
        )

        with pytest.raises(PortBusy, match="already in use"):
            supervisor.start()

    assert supervisor.children == {}

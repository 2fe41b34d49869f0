"""Advisor pages: the list by saving, the detail with its chart, dismiss and apply, the what-if form."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from costline.advisor import actions
from costline.advisor.models import Recommendation, Status
from costline.tenancy.models import Organization, Role
from costline.usage.models import LLMCall
from tests.platform.advisor.test_lifecycle import T0, finding
from tests.platform.dashboards.conftest import Member, sign_in

__all__ = ["sign_in"]  # the signed-in members of the dashboards' tests
SignIn = Callable[..., Member]
Writer = Callable[[Organization, list[dict[str, Any]]], list[LLMCall]]


def test_the_list_is_sorted_by_saving_and_linked_in_the_navigation(sign_in: SignIn) -> None:
    member = sign_in(Role.VIEWER)
    actions.store_findings(member.org.id, [finding("12", key="small"), finding("900", key="big")], T0)

    response = member.client.get(member.url("advisor/"))

    html = response.content.decode()
    assert response.status_code == 200
    assert f'href="/o/{member.org.slug}/advisor/"' in html
    big, small = (Recommendation.objects.get(key=k).id for k in ("big", "small"))
    assert html.index(f'data-recommendation="{big}"') < html.index(f'data-recommendation="{small}"')


def test_the_detail_shows_evidence_and_the_replay_chart(sign_in: SignIn, write_calls: Writer) -> None:
    member = sign_in(Role.VIEWER)
    write_calls(member.org, [{"start_time": datetime.now(UTC) - timedelta(days=1)}])
    actions.store_findings(member.org.id, [finding()], T0)
    row = Recommendation.objects.get(tenant=member.org)

    response = member.client.get(member.url(f"advisor/{row.id}/"))

    html = response.content.decode()
    assert response.status_code == 200
    assert "repeats" in html
    assert "Turn on the gateway" in html
    figure = json.loads(html.split('id="replay-figure" type="application/json">')[1].split("</script>")[0])
    assert [t["name"] for t in figure["data"]] == ["Actual cost", "Replayed under the policy"]
    assert sum(figure["data"][0]["y"]) == 0.0085
    assert 'id="apply"' not in html  # a viewer reads only


def test_a_member_dismisses_with_a_reason_and_applies(sign_in: SignIn) -> None:
    member = sign_in(Role.MEMBER)
    actions.store_findings(member.org.id, [finding(key="a"), finding(key="b")], T0)
    a, b = (Recommendation.objects.get(key=k) for k in ("a", "b"))

    member.client.post(member.url(f"advisor/{a.id}/dismiss/"), {"reason": "Fresh answers needed"})
    member.client.post(member.url(f"advisor/{b.id}/apply/"))

    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, a.dismissed_reason) == (Status.DISMISSED, "Fresh answers needed")
    assert b.status == Status.APPLIED


def test_a_viewer_may_not_dismiss_or_apply(sign_in: SignIn) -> None:
    member = sign_in(Role.VIEWER)
    actions.store_findings(member.org.id, [finding()], T0)
    row = Recommendation.objects.get(tenant=member.org)

    applied = member.client.post(member.url(f"advisor/{row.id}/apply/"))
    dismissed = member.client.post(member.url(f"advisor/{row.id}/dismiss/"), {"reason": "x"})

    assert (applied.status_code, dismissed.status_code) == (403, 403)
    assert Recommendation.objects.get(pk=row.pk).status == Status.OPEN


def test_another_organisations_recommendation_is_a_404(sign_in: SignIn) -> None:
    owner, stranger = sign_in(Role.OWNER), sign_in(Role.OWNER)
    actions.store_findings(owner.org.id, [finding()], T0)
    row = Recommendation.objects.get(tenant=owner.org)

    assert stranger.client.get(stranger.url(f"advisor/{row.id}/")).status_code == 404
    assert stranger.client.post(stranger.url(f"advisor/{row.id}/apply/")).status_code == 404
    assert (
        stranger.client.post(stranger.url(f"advisor/{row.id}/dismiss/"), {"reason": "x"}).status_code == 404
    )
    assert Recommendation.objects.get(pk=row.pk).status == Status.OPEN


def test_the_whatif_form_shows_the_saving(sign_in: SignIn, write_calls: Writer) -> None:
    member = sign_in(Role.VIEWER)
    start = datetime.now(UTC) - timedelta(days=3)
    rows = [{"prompt_hash": 7}] * 4  # one prompt asked four times within minutes: three repeats
    write_calls(member.org, [r | {"start_time": start + timedelta(minutes=i)} for i, r in enumerate(rows)])

    response = member.client.get(
        member.url("advisor/whatif/"), {"run": "1", "days": "7", "response_cache_window_s": "3600"}
    )
    bad = member.client.get(member.url("advisor/whatif/"), {"run": "1", "semantic_cache_threshold": "7"})

    html = response.content.decode()
    assert response.status_code == 200
    saving = html.split('data-kpi="saving"')[1]
    assert "$0.0255" in saving  # 3 × $0.0085
    assert bad.status_code == 400
    assert "semantic_cache_threshold" in bad.content.decode()

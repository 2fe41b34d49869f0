"""Settings pages of an organisation (/o/<slug>/settings/) and the invitation link (/accounts/invite/).

Every page is an `org_view`: reading needs the role the page names, and every write is a POST to a URL
of its own whose `org_view` names the role it needs, so a too-low role is a 403 before anything is
read. Objects are looked up through `request.organization`: another organisation's id is a 404. After a
write, the browser is redirected (POST-redirect-GET) and a message says what happened.
"""

from __future__ import annotations

from typing import Any, cast
from zoneinfo import ZoneInfo

from django.contrib import messages
from django.contrib.auth import login
from django.core.exceptions import PermissionDenied
from django.db.models import Case, IntegerField, Value, When
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from costline.tenancy import invitations, shown_once
from costline.tenancy.actions import issue_api_token, issue_ingest_key, revoke_api_token, revoke_ingest_key
from costline.tenancy.forms import (
    AcceptInvitationForm,
    ApiTokenForm,
    IngestKeyForm,
    InvitationForm,
    OrganizationForm,
    ProjectForm,
    RoleForm,
)
from costline.tenancy.members import (
    LastOwner,
    NotAllowed,
    can_manage,
    change_role,
    grantable_roles,
    remove_member,
)
from costline.tenancy.models import (
    ApiToken,
    IngestKey,
    Invitation,
    Membership,
    Organization,
    Project,
    Role,
    User,
)
from costline.tenancy.web import OrgRequest, org_view, role_at_least

INGEST_KEY = "ingest_key"
API_TOKEN = "api_token"  # noqa: S105 - the name of a kind of secret


def settings_page(
    request: OrgRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """Render a settings page with times shown in the organisation's time zone."""
    with timezone.override(ZoneInfo(request.organization.time_zone)):
        return render(request, template, context, status=status)


def person(request: OrgRequest) -> User:
    """The signed-in user of a page `org_view` let through (so never anonymous)."""
    return cast(User, request.user)


def _site_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/")


# --- General -------------------------------------------------------------------------------------------


@org_view()
def settings_index(request: OrgRequest) -> HttpResponse:
    return redirect("settings:general", org=request.organization.slug)


@org_view()
def general(request: OrgRequest) -> HttpResponse:
    return _general_page(request, OrganizationForm(instance=request.organization))


def _general_page(request: OrgRequest, form: OrganizationForm, status: int = 200) -> HttpResponse:
    return settings_page(request, "tenancy/general.html", {"form": form}, status)


@org_view(min_role=Role.ADMIN)
@require_POST
def general_update(request: OrgRequest) -> HttpResponse:
    # A copy: a form that fails validation must not rename the organisation shown in the top bar.
    form = OrganizationForm(request.POST, instance=Organization.objects.get(pk=request.organization.pk))
    if not form.is_valid():
        return _general_page(request, form, status=400)
    form.save()
    messages.success(request, f"Saved. Pages now show times in {form.cleaned_data['time_zone']}.")
    return redirect("settings:general", org=request.organization.slug)


# --- Projects ------------------------------------------------------------------------------------------


@org_view()
def projects(request: OrgRequest) -> HttpResponse:
    rows = Project.objects.filter(organization=request.organization).order_by("name", "id")
    return settings_page(request, "tenancy/projects.html", {"projects": rows})


@org_view(min_role=Role.ADMIN)
def project_new(request: OrgRequest) -> HttpResponse:
    return _project_form(request, Project(organization=request.organization))


@org_view(min_role=Role.ADMIN)
def project_edit(request: OrgRequest, project_id: int) -> HttpResponse:
    project = get_object_or_404(Project, organization=request.organization, id=project_id)
    return _project_form(request, project)


def _project_form(request: OrgRequest, project: Project) -> HttpResponse:
    creating = project.pk is None
    form = ProjectForm(request.POST or None, instance=project, organization=request.organization)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        messages.success(
            request, f"{'Created' if creating else 'Saved'} project {saved.name} ({saved.slug})."
        )
        return redirect("settings:projects", org=request.organization.slug)
    context = {"form": form, "project": project, "creating": creating}
    return settings_page(request, "tenancy/project_form.html", context, status=400 if form.errors else 200)


# --- Members and invitations ---------------------------------------------------------------------------


@org_view()
def members(request: OrgRequest) -> HttpResponse:
    return _members_page(request, InvitationForm(actor=request.membership))


def _members_page(request: OrgRequest, invite_form: InvitationForm, status: int = 200) -> HttpResponse:
    actor = request.membership
    rank = Case(*(When(role=role, then=Value(n)) for n, role in enumerate(Role)), output_field=IntegerField())
    rows = (
        Membership.objects.filter(organization=request.organization)
        .select_related("user")
        .order_by(rank, "user__email")
    )
    grantable = grantable_roles(actor)
    people = [
        {"membership": m, "manageable": can_manage(actor, m) and m.id != actor.id, "is_you": m.id == actor.id}
        for m in rows
    ]
    pending = (
        Invitation.objects.open().filter(organization=request.organization).select_related("invited_by")
        if role_at_least(actor, Role.ADMIN)
        else Invitation.objects.none()
    )
    context = {
        "people": people,
        "grantable": [(r.value, r.label) for r in grantable],
        "invitations": pending.order_by("-sent_at"),
        "invite_form": invite_form,
        "invitation_days": invitations.INVITATION_DAYS,
    }
    return settings_page(request, "tenancy/members.html", context, status)


def _membership(request: OrgRequest, membership_id: int) -> Membership:
    return get_object_or_404(
        Membership.objects.select_related("user", "organization"),
        organization=request.organization,
        id=membership_id,
    )


@org_view(min_role=Role.ADMIN)
@require_POST
def member_role(request: OrgRequest, membership_id: int) -> HttpResponse:
    target = _membership(request, membership_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Pick one of the roles owner, admin, member or viewer.")
    else:
        role = Role(form.cleaned_data["role"])
        try:
            changed = change_role(request.membership, target, role)
        except LastOwner as error:
            messages.error(request, str(error))
        else:
            if changed:
                messages.success(request, f"{target.user.email} is now {role.label.lower()}.")
    return redirect("settings:members", org=request.organization.slug)


@org_view(min_role=Role.ADMIN)
@require_POST
def member_remove(request: OrgRequest, membership_id: int) -> HttpResponse:
    target = _membership(request, membership_id)
    if target.id == request.membership.id:
        return _leave(request)
    try:
        remove_member(request.membership, target)
    except LastOwner as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Removed {target.user.email} from {request.organization.name}.")
    return redirect("settings:members", org=request.organization.slug)


@org_view()
@require_POST
def leave(request: OrgRequest) -> HttpResponse:
    return _leave(request)


def _leave(request: OrgRequest) -> HttpResponse:
    try:
        remove_member(request.membership, request.membership)
    except LastOwner as error:
        messages.error(request, str(error))
        return redirect("settings:members", org=request.organization.slug)
    messages.success(request, f"You left {request.organization.name}.")
    return redirect("home")


@org_view(min_role=Role.ADMIN)
@require_POST
def invitation_new(request: OrgRequest) -> HttpResponse:
    form = InvitationForm(request.POST, actor=request.membership)
    if not form.is_valid():
        return _members_page(request, form, status=400)
    try:
        sent = invitations.invite(
            request.membership,
            form.cleaned_data["email"],
            Role(form.cleaned_data["role"]),
            site_url=_site_url(request),
        )
    except invitations.InvitationError as error:
        form.add_error("email", str(error))
        return _members_page(request, form, status=400)
    messages.success(
        request,
        f"Invited {sent.invitation.email} as {sent.invitation.get_role_display().lower()}; "
        f"the link in the email works for {invitations.INVITATION_DAYS} days.",
    )
    return redirect("settings:members", org=request.organization.slug)


def _invitation(request: OrgRequest, invitation_id: int) -> Invitation:
    return get_object_or_404(
        Invitation.objects.select_related("organization"), organization=request.organization, id=invitation_id
    )


@org_view(min_role=Role.ADMIN)
@require_POST
def invitation_resend(request: OrgRequest, invitation_id: int) -> HttpResponse:
    invitation = _invitation(request, invitation_id)
    try:
        invitations.resend(request.membership, invitation, site_url=_site_url(request))
    except invitations.InvitationError as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request, f"Sent a new link to {invitation.email}; the previous link no longer works."
        )
    return redirect("settings:members", org=request.organization.slug)


@org_view(min_role=Role.ADMIN)
@require_POST
def invitation_revoke(request: OrgRequest, invitation_id: int) -> HttpResponse:
    invitation = _invitation(request, invitation_id)
    if invitations.revoke(request.membership, invitation):
        messages.success(request, f"Withdrew the invitation of {invitation.email}; its link no longer works.")
    else:
        messages.info(request, f"The invitation of {invitation.email} was already used or withdrawn.")
    return redirect("settings:members", org=request.organization.slug)


# --- Ingest keys ---------------------------------------------------------------------------------------


@org_view(min_role=Role.ADMIN)
def ingest_keys(request: OrgRequest) -> HttpResponse:
    return _ingest_keys_page(request, IngestKeyForm(organization=request.organization))


def _ingest_keys_page(request: OrgRequest, form: IngestKeyForm, status: int = 200) -> HttpResponse:
    keys = IngestKey.objects.filter(organization=request.organization).select_related("project", "created_by")
    context = {
        "keys": keys.order_by(active_first(), "-created_at", "-id"),
        "form": form,
        "new_secret": shown_once.take(request, INGEST_KEY),
    }
    response = settings_page(request, "tenancy/ingest_keys.html", context, status)
    shown_once.forget(request, response, INGEST_KEY)
    return response


def active_first() -> Case:
    return Case(When(revoked_at__isnull=True, then=Value(0)), default=Value(1), output_field=IntegerField())


@org_view(min_role=Role.ADMIN)
@require_POST
def ingest_key_new(request: OrgRequest) -> HttpResponse:
    form = IngestKeyForm(request.POST, organization=request.organization)
    if not form.is_valid():
        return _ingest_keys_page(request, form, status=400)
    issued = issue_ingest_key(
        request.organization,
        form.cleaned_data["name"],
        project=form.cleaned_data["project"],
        created_by=person(request),
    )
    messages.success(request, f"Created ingest key {issued.prefix}…: copy it now, it is shown only once.")
    response = redirect("settings:ingest_keys", org=request.organization.slug)
    shown_once.keep(request, response, INGEST_KEY, issued.plaintext)
    return response


@org_view(min_role=Role.ADMIN)
@require_POST
def ingest_key_revoke(request: OrgRequest, key_id: int) -> HttpResponse:
    key = get_object_or_404(IngestKey, organization=request.organization, id=key_id)
    if revoke_ingest_key(request.organization, key.id):
        messages.success(
            request, f"Revoked ingest key {key.prefix}… ({key.name}); the collector now refuses it."
        )
    else:
        messages.info(request, f"Ingest key {key.prefix}… was already revoked.")
    return redirect("settings:ingest_keys", org=request.organization.slug)


# --- API tokens ----------------------------------------------------------------------------------------


@org_view(min_role=Role.MEMBER)
def api_tokens(request: OrgRequest) -> HttpResponse:
    return _api_tokens_page(request, ApiTokenForm())


def _api_tokens_page(request: OrgRequest, form: ApiTokenForm, status: int = 200) -> HttpResponse:
    is_admin = role_at_least(request.membership, Role.ADMIN)
    tokens = ApiToken.objects.filter(organization=request.organization, user=person(request))
    if is_admin:
        tokens = tokens | ApiToken.objects.filter(organization=request.organization, user__isnull=True)
    context = {
        "tokens": tokens.order_by(active_first(), "-created_at", "-id"),
        "form": form,
        "new_secret": shown_once.take(request, API_TOKEN),
    }
    response = settings_page(request, "tenancy/api_tokens.html", context, status)
    shown_once.forget(request, response, API_TOKEN)
    return response


@org_view(min_role=Role.MEMBER)
@require_POST
def api_token_new(request: OrgRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST)
    if not form.is_valid():
        return _api_tokens_page(request, form, status=400)
    personal = form.cleaned_data["scope"] == ApiTokenForm.PERSONAL
    if not personal and not role_at_least(request.membership, Role.ADMIN):
        raise NotAllowed(
            "Only admins and owners can create organisation tokens; create a personal token instead."
        )
    user = person(request) if personal else None
    issued = issue_api_token(request.organization, form.cleaned_data["name"], user=user)
    messages.success(request, f"Created API token {issued.prefix}…: copy it now, it is shown only once.")
    response = redirect("settings:api_tokens", org=request.organization.slug)
    shown_once.keep(request, response, API_TOKEN, issued.plaintext)
    return response


@org_view(min_role=Role.MEMBER)
@require_POST
def api_token_revoke(request: OrgRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, organization=request.organization, id=token_id)
    if token.user_id is None:
        if not role_at_least(request.membership, Role.ADMIN):
            raise PermissionDenied("Only admins and owners can revoke organisation tokens.")
    elif token.user_id != request.user.pk:
        raise Http404("No such API token.")  # someone else's personal token is not yours to see
    if revoke_api_token(request.organization, token.id):
        messages.success(request, f"Revoked API token {token.prefix}… ({token.name}); it no longer works.")
    else:
        messages.info(request, f"API token {token.prefix}… was already revoked.")
    return redirect("settings:api_tokens", org=request.organization.slug)


# --- Accepting an invitation: /accounts/invite/<token>/ --------------------------------------------------


def accept_invitation(request: HttpRequest, token: str) -> HttpResponse:
    invitation = invitations.find(token)
    if invitation is None:
        return _invitation_page(request, None, "unknown", status=404)
    try:
        invitations.check_usable(invitation)
    except invitations.InvitationError as error:
        return _invitation_page(request, invitation, "unusable", error=str(error), status=410)
    org = invitation.organization
    if request.user.is_authenticated:
        try:
            invitations.accept(invitation, request.user)
        except invitations.InvitationError as error:
            return _invitation_page(request, invitation, "wrong_user", error=str(error), status=403)
        messages.success(
            request, f"Welcome to {org.name}: you joined as {invitation.get_role_display().lower()}."
        )
        return redirect("dashboards:overview", org=org.slug)
    if User.objects.filter(email__iexact=invitation.email).exists():
        return _invitation_page(request, invitation, "sign_in")
    form = AcceptInvitationForm(request.POST or None, email=invitation.email)
    if request.method == "POST" and form.is_valid():
        try:
            membership = invitations.accept_as_new_user(
                invitation, form.cleaned_data["password1"], name=form.cleaned_data["name"]
            )
        except invitations.InvitationError as error:
            return _invitation_page(request, invitation, "unusable", error=str(error), status=409)
        login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(
            request, f"Welcome to {org.name}: you joined as {invitation.get_role_display().lower()}."
        )
        return redirect("dashboards:overview", org=org.slug)
    status = 400 if form.errors else 200
    return _invitation_page(request, invitation, "new_account", form=form, status=status)


def _invitation_page(
    request: HttpRequest,
    invitation: Invitation | None,
    state: str,
    *,
    error: str = "",
    form: AcceptInvitationForm | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {"invitation": invitation, "state": state, "error": error, "form": form}
    return render(request, "tenancy/invitation.html", context, status=status)

"""Teams settings pages (/o/<slug>/settings/teams/): admins create and edit teams, everyone reads them.

A team owns projects (a budget scoped to a team covers its projects' calls) and has members (who may
change the budgets scoped to it even with the viewer role).
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils.text import slugify

from costline.tenancy.models import Organization, Project, Role, Team, User
from costline.tenancy.views import settings_page
from costline.tenancy.web import OrgRequest, org_view


class TeamForm(forms.ModelForm):
    slug = forms.SlugField(
        required=False,
        max_length=100,
        help_text="How budgets and the API name the team. Empty: made from the name.",
    )
    projects = forms.ModelMultipleChoiceField(
        queryset=Project.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="A budget scoped to this team covers these projects' calls.",
    )
    members = forms.ModelMultipleChoiceField(
        queryset=User.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Members of the team may change its budgets, whatever their role.",
    )

    class Meta:
        model = Team
        fields = ["name", "slug", "projects", "members"]

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization
        projects = cast(forms.ModelMultipleChoiceField, self.fields["projects"])
        projects.queryset = Project.objects.filter(organization=organization).order_by("name")
        members = cast(forms.ModelMultipleChoiceField, self.fields["members"])
        members.queryset = User.objects.filter(memberships__organization=organization).order_by("email")

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the team a name.")
        return name

    def clean_slug(self) -> str:
        slug: str = self.cleaned_data.get("slug") or slugify(self.cleaned_data.get("name", ""))[:100]
        if not slug:
            raise forms.ValidationError("Give a slug of letters, digits, - and _ (the name has none).")
        taken = Team.objects.filter(organization=self.organization, slug=slug).exclude(pk=self.instance.pk)
        if taken.exists():
            raise forms.ValidationError(f"Another team of this organisation has the slug {slug!r}.")
        return slug


@org_view()
def teams(request: OrgRequest) -> HttpResponse:
    rows = (
        Team.objects.filter(organization=request.organization)
        .prefetch_related("projects", "members")
        .order_by("name", "id")
    )
    return settings_page(request, "tenancy/teams.html", {"teams": rows})


@org_view(min_role=Role.ADMIN)
def team_new(request: OrgRequest) -> HttpResponse:
    return _team_form(request, Team(organization=request.organization))


@org_view(min_role=Role.ADMIN)
def team_edit(request: OrgRequest, team_id: int) -> HttpResponse:
    return _team_form(request, get_object_or_404(Team, organization=request.organization, id=team_id))


def _team_form(request: OrgRequest, team: Team) -> HttpResponse:
    creating = team.pk is None
    form = TeamForm(request.POST or None, instance=team, organization=request.organization)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        messages.success(request, f"{'Created' if creating else 'Saved'} team {saved.name} ({saved.slug}).")
        return redirect("settings:teams", org=request.organization.slug)
    context = {"form": form, "team": team, "creating": creating}
    return settings_page(request, "tenancy/team_form.html", context, status=400 if form.errors else 200)

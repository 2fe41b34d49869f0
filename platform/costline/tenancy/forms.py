"""Forms of the settings pages and of accepting an invitation."""

from __future__ import annotations

import re
from functools import cache
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.utils.text import slugify

from costline.tenancy.members import grantable_roles
from costline.tenancy.models import Membership, Organization, Project, Role, Team, User


class SignInForm(AuthenticationForm):
    """Django's sign-in form, reading the email as accounts store it (lower case, trimmed)."""

    def clean_username(self) -> str:
        return str(self.cleaned_data.get("username") or "").strip().lower()


@cache
def time_zone_choices() -> list[tuple[str, str]]:
    """IANA zones people pick from: Area/Location names plus UTC (not the legacy aliases like 'EST')."""
    zones = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))
    return [("UTC", "UTC"), *((z, z.replace("_", " ")) for z in zones)]


class OrganizationForm(forms.ModelForm):
    time_zone = forms.ChoiceField(
        choices=time_zone_choices,
        help_text="Dashboards, time ranges and exports use this zone's days and months.",
        error_messages={
            "invalid_choice": "%(value)s is not an IANA time zone this server knows; pick one from the "
            "list, e.g. Europe/Paris or America/New_York."
        },
    )

    class Meta:
        model = Organization
        fields = ["name", "time_zone"]

    def clean_time_zone(self) -> str:
        key: str = self.cleaned_data["time_zone"]
        try:
            ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError):
            raise forms.ValidationError(
                f"{key!r} is not an IANA time zone this server knows; pick one from the list, "
                "e.g. Europe/Paris or America/New_York."
            ) from None
        return key


class ProjectForm(forms.ModelForm):
    slug = forms.SlugField(
        required=False,
        max_length=100,
        help_text=(
            "Spans with the attribute costline.project=<slug> belong to this project. "
            "Empty: made from the name."
        ),
    )
    patterns = forms.CharField(
        label="Service patterns",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "chat-*\nsupport-bot"}),
        help_text=(
            "One per line: calls whose service.name matches one of these shell-style patterns "
            "belong to this project (when neither the span nor the ingest key names one)."
        ),
    )

    class Meta:
        model = Project
        fields = ["name", "slug"]

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization
        self.fields["patterns"].initial = "\n".join(self.instance.service_patterns or [])

    def clean_slug(self) -> str:
        slug: str = self.cleaned_data.get("slug") or slugify(self.cleaned_data.get("name", ""))[:100]
        if not slug:
            raise forms.ValidationError("Give a slug of letters, digits, - and _ (the name has none).")
        taken = Project.objects.filter(organization=self.organization, slug=slug).exclude(pk=self.instance.pk)
        if taken.exists():
            raise forms.ValidationError(f"Another project of this organisation has the slug {slug!r}.")
        return slug

    def clean_patterns(self) -> list[str]:
        patterns: list[str] = []
        for line in re.split(r"[\n,]", self.cleaned_data.get("patterns", "")):
            pattern = line.strip()
            if not pattern or pattern in patterns:
                continue
            if len(pattern) > 200 or re.search(r"\s", pattern):
                raise forms.ValidationError(
                    f"{pattern[:40]!r} is not a service pattern: one pattern per line, "
                    "without spaces, at most 200 characters."
                )
            patterns.append(pattern)
        return patterns

    def save(self, commit: bool = True) -> Project:
        project: Project = super().save(commit=False)
        project.organization = self.organization
        project.service_patterns = self.cleaned_data["patterns"]
        if commit:
            project.save()
        return project


class InvitationForm(forms.Form):
    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=[])

    def __init__(self, *args: Any, actor: Membership, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        role = cast(forms.ChoiceField, self.fields["role"])
        role.choices = [(r.value, r.label) for r in grantable_roles(actor)]
        role.initial = Role.MEMBER


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class IngestKeyForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Where the key is used, e.g. 'chat-api production'.")
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(),
        required=False,
        empty_label="(none: from the span or service name)",
        help_text="Calls sent with this key belong to this project unless a span names another.",
    )

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        project = cast(forms.ModelChoiceField, self.fields["project"])
        project.queryset = Project.objects.filter(organization=organization).order_by("name")


class GatewayKeyForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Who calls with it, e.g. 'support-bot production'.")
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(),
        required=False,
        empty_label="(none)",
        help_text="The project the gateway attributes this key's calls to.",
    )
    team = forms.ModelChoiceField(
        queryset=Team.objects.none(),
        required=False,
        empty_label="(none)",
        help_text="The team that owns the calls (its budgets apply through the project).",
    )
    cache_enabled = forms.BooleanField(
        required=False,
        initial=True,
        label="Response cache",
        help_text="Answer repeated requests from the cache. Off: nothing of this key's calls is cached.",
    )

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        project = cast(forms.ModelChoiceField, self.fields["project"])
        project.queryset = Project.objects.filter(organization=organization).order_by("name")
        team = cast(forms.ModelChoiceField, self.fields["team"])
        team.queryset = Team.objects.filter(organization=organization).order_by("name")


class ApiTokenForm(forms.Form):
    PERSONAL = "personal"
    ORGANIZATION = "organization"

    name = forms.CharField(max_length=200, help_text="What the token is for, e.g. 'finance export script'.")
    scope = forms.ChoiceField(
        choices=[
            (PERSONAL, "Personal: acts as you, stops working if you leave"),
            (ORGANIZATION, "Organisation: not tied to a person (admins only)"),
        ],
        initial=PERSONAL,
        required=False,
    )

    def clean_scope(self) -> str:
        return self.cleaned_data.get("scope") or self.PERSONAL


class DateTimeLocalInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self) -> None:
        super().__init__(format="%Y-%m-%dT%H:%M")


class AcceptInvitationForm(forms.Form):
    """Creates the invitee's account: a name and a password (checked by the password validators)."""

    name = forms.CharField(max_length=300, required=False, label="Your name")
    password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args: Any, email: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        first, second = cleaned.get("password1"), cleaned.get("password2")
        if first and second and first != second:
            self.add_error("password2", "The two passwords differ; type the same password twice.")
        elif first:
            name = cleaned.get("name", "")
            given, _, family = name.partition(" ")
            person = User(email=self.email, first_name=given, last_name=family)
            try:
                password_validation.validate_password(first, person)
            except forms.ValidationError as error:
                self.add_error("password1", error)
        return cleaned

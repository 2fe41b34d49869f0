"""Organisations (tenants), their projects, members, and the secrets that identify callers.

Every secret (ingest key, API token) is random, shown once when issued, and stored only as a SHA-256
hash with a short prefix for display. The secrets carry 256 bits of entropy, so a fast hash is enough:
nobody can brute-force them, and a lookup by hash is a single index probe on the hot ingest path.
"""

from __future__ import annotations

from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.utils import timezone


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("A user needs an email address.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra)


class User(AbstractUser):
    """A person who signs in with an email address; belongs to organisations through memberships."""

    username = None  # type: ignore[assignment]
    email = models.EmailField(unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    objects: ClassVar[UserManager] = UserManager()  # type: ignore[assignment]

    def __str__(self) -> str:
        return self.email


class Organization(models.Model):
    """A tenant: everything Costline stores belongs to exactly one organisation."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    time_zone = models.CharField(max_length=64, default="UTC")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name

    @property
    def zone(self) -> ZoneInfo:
        """The organisation's time zone; UTC when the stored name is empty or unknown."""
        try:
            return ZoneInfo(self.time_zone or "UTC")
        except (KeyError, ValueError):
            return ZoneInfo("UTC")


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Membership(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="membership_unique_user_per_org")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class Project(models.Model):
    """A product or application area calls are attributed to.

    A call's project comes from a `costline.project` attribute (its slug), else the ingest key's
    project, else the first project whose `service_patterns` (shell-style globs such as `chat-*`)
    match the call's `service.name`.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100)
    service_patterns = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "slug"], name="project_unique_slug_per_org")
        ]

    def __str__(self) -> str:
        return self.name


class SecretQuerySet(models.QuerySet[Any]):
    def active(self) -> SecretQuerySet:
        return self.filter(revoked_at__isnull=True)


class Secret(models.Model):
    """Common shape of a revocable, hashed secret."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16, help_text="First characters of the secret, for display.")
    secret_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = SecretQuerySet.as_manager()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IngestKey(Secret):
    """Authenticates OTLP exports; optionally pins the calls it sends to a project."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="ingest_keys")
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")


class ApiToken(Secret):
    """Authenticates REST API calls; belongs to a user (acts with their role) or to the organisation."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_tokens")
    user = models.ForeignKey(User, null=True, blank=True, on_delete=models.CASCADE, related_name="api_tokens")


class GatewayKey(Secret):
    """Authenticates callers of the inference gateway (`Authorization: Bearer clgk_…`, as OpenAI keys).

    Maps the caller to its organisation and, optionally, a team and a project: the gateway's calls are
    attributed to them and the budgets covering them are reserved against. The gateway also exports
    its spans of a caller's calls with this key, so the collector stores them in the same organisation.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="gateway_keys")
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    team = models.ForeignKey("Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Off: the gateway neither answers this key's calls from its response caches nor stores their answers
    # (for callers whose prompts must not be kept, even as cached responses).
    cache_enabled = models.BooleanField(default=True)


class InvitationQuerySet(models.QuerySet["Invitation"]):
    def open(self) -> InvitationQuerySet:
        """Neither accepted nor revoked (possibly expired)."""
        return self.filter(accepted_at__isnull=True, revoked_at__isnull=True)


class Invitation(models.Model):
    """An email address invited to join an organisation with a role, through a link sent by email.

    The link carries a random token stored here only as its SHA-256 hash, like every other secret;
    resending issues a new token (the old link stops working) and a new expiry.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        constraints = [
            # One open invitation per address and organisation: a second one would be a second valid link.
            models.UniqueConstraint(
                fields=["organization", "email"],
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="invitation_one_open_per_email",
            )
        ]

    def __str__(self) -> str:
        return f"{self.email} to {self.organization} as {self.role}"

    @property
    def status(self) -> str:
        """accepted, revoked, expired or pending."""
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"


class Team(models.Model):
    """A group of members who own some projects: budgets can be scoped to a team (its projects' calls)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="teams")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100)
    projects = models.ManyToManyField(Project, blank=True, related_name="teams")
    members = models.ManyToManyField(User, blank=True, related_name="teams")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "slug"], name="team_unique_slug_per_org")
        ]

    def __str__(self) -> str:
        return self.name

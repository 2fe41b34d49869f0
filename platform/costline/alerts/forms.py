"""The notification channel form: what `target` must be depends on the kind."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email

from costline.alerts.delivery import new_signing_secret, recipients_of
from costline.alerts.models import Channel, ChannelKind

MAX_RECIPIENTS = 50
MAX_URL_CHARS = 2000


class ChannelForm(forms.ModelForm):
    class Meta:
        model = Channel
        fields = ["name", "kind", "target", "enabled"]
        labels = {"target": "Recipients or URL", "enabled": "Enabled"}
        help_texts = {
            "target": (
                "Email: addresses separated by commas. Webhook: the URL Costline POSTs signed JSON to. "
                "Slack: the incoming webhook URL (https://hooks.slack.com/services/…)."
            ),
            "enabled": "A disabled channel receives nothing; budgets keep it in their list.",
        }
        widgets = {"target": forms.TextInput(attrs={"autocomplete": "off"})}

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        if not name:
            raise ValidationError("Give the channel a name, e.g. “Platform on-call”.")
        return name

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        kind, target = cleaned.get("kind"), (cleaned.get("target") or "").strip()
        if kind is None or not target:
            return cleaned
        if kind == ChannelKind.EMAIL:
            cleaned["target"] = self._clean_recipients(target)
        else:
            cleaned["target"] = self._clean_url(target, ChannelKind(kind))
        return cleaned

    def _clean_recipients(self, target: str) -> str:
        recipients = recipients_of(target)
        invalid = []
        for address in recipients:
            try:
                validate_email(address)
            except ValidationError:
                invalid.append(address)
        if invalid:
            self.add_error(
                "target", f"Not an email address: {', '.join(invalid)}. Separate addresses by commas."
            )
        elif len(recipients) > MAX_RECIPIENTS:
            self.add_error("target", f"At most {MAX_RECIPIENTS} recipients; use a mailing list for more.")
        return ", ".join(dict.fromkeys(recipients))  # without repeats, in the order given

    def _clean_url(self, target: str, kind: ChannelKind) -> str:
        try:
            URLValidator(schemes=["http", "https"])(target)
        except ValidationError:
            self.add_error(
                "target",
                f"A {kind.label} needs an http:// or https:// URL, e.g. https://example.com/hooks/costline.",
            )
            return target
        if len(target) > MAX_URL_CHARS:
            self.add_error("target", f"The URL is longer than {MAX_URL_CHARS} characters.")
        return target

    def save(self, commit: bool = True) -> Channel:
        channel: Channel = super().save(commit=False)
        if channel.kind == ChannelKind.WEBHOOK and not channel.signing_secret:
            channel.signing_secret = new_signing_secret()
        if commit:
            channel.save()
        return channel

"""Costline: the Django project (settings, URLs, Celery app) and one app per domain."""

from __future__ import annotations

from typing import Any

__all__ = ["celery_app"]


def __getattr__(name: str) -> Any:
    # `costline.celery_app` is the Celery app, loaded on first use rather than with the package: every
    # process imports `costline`, and the collector and management commands have no use for Celery.
    # `celery -A costline` finds the app in `costline.celery` either way.
    if name == "celery_app":
        from costline.celery import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Costline: the Django project (settings, URLs, Celery app) and one app per domain."""

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def create_partitions_ahead(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    """After migrating, make sure the raw tables have partitions for the coming days."""
    from django.db import connections
    from django.utils import timezone

    from costline.usage.partitions import (
        PARTITIONED_TABLES,
        ROLLUP_PARTITIONED_TABLES,
        days_around,
        ensure_partitions,
    )

    with connections[using].cursor() as cursor:
        ensure_partitions(
            cursor,
            days_around(timezone.now().date(), back=1, ahead=7),
            (*PARTITIONED_TABLES, *ROLLUP_PARTITIONED_TABLES),
        )


class UsageConfig(AppConfig):
    name = "costline.usage"
    label = "usage"
    verbose_name = "Usage"

    def ready(self) -> None:
        from costline.usage.reprice import connect_signals

        post_migrate.connect(create_partitions_ahead, sender=self)
        connect_signals()

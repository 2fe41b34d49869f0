"""The stretch of time a page answers: the chosen range snapped to whole chart buckets.

The query layer answers whole buckets of its interval, so a chart of "the last 30 days" in day buckets
starts at the organisation's midnight 30 days ago and ends at tonight's. Every number on a page (tiles,
tables, chart) is read over that same snapped span, so the bars of a chart add up to the tile above it;
tables ask for totals only (`points=False`), which reads the span from the coarsest rollups at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from costline.dashboards.timerange import TimeRange
from costline.usage.metrics import UsageQuery
from costline.usage.query import bucket_edges, resolve_interval


@dataclass(frozen=True)
class PageSpan:
    start: datetime  # inclusive, a bucket edge (UTC)
    end: datetime  # exclusive, a bucket edge (UTC)
    interval: str  # the chart's buckets: minute, hour or day
    zone: ZoneInfo

    @property
    def label(self) -> str:
        start, end = self.start.astimezone(self.zone), self.end.astimezone(self.zone)
        if start.time() == time(0) and end.time() == time(0):
            last = end - timedelta(days=1)
            if last.date() == start.date():
                return f"{start:%d %b %Y}"
            return f"{start:%d %b %Y} – {last:%d %b %Y}"
        return f"{start:%d %b %Y %H:%M} – {end:%d %b %Y %H:%M}"

    def query(
        self,
        metrics: tuple[str, ...],
        group_by: tuple[str, ...] = (),
        filters: dict[str, tuple[str, ...]] | None = None,
        *,
        points: bool = False,
    ) -> UsageQuery:
        """A UsageQuery over this span: totals only (a table), or a point per bucket (a chart)."""
        return UsageQuery(
            start=self.start,
            end=self.end,
            interval=self.interval,
            group_by=group_by,
            filters=filters or {},
            metrics=metrics,
            time_zone=self.zone.key,
            points=points,
        )


def page_span(time_range: TimeRange, now: datetime, interval: str = "auto") -> PageSpan:
    """The range snapped to the buckets of `interval` (auto: as the query layer picks for a chart).

    Raises QueryError when the interval cannot serve the range (minutes over a month).
    """
    probe = UsageQuery(
        start=time_range.start, end=time_range.end, interval=interval, time_zone=time_range.zone.key
    )
    resolved = resolve_interval(probe, now)
    edges = bucket_edges(time_range.start, time_range.end, resolved, time_range.zone)
    return PageSpan(edges[0], edges[-1], resolved, time_range.zone)

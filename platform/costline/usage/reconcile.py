"""Decide what an export adds, given the calls of the same traces and requests already stored.

Spans of one request often arrive in different exports: a provider SDK's span first, the framework span
wrapping it a moment later; or two instrumentations reporting one request. These plain functions decide,
call by call, what to insert, what stored row a better span replaces, and what context a dropped span
lends to the one that stays. The ingest sink runs them under a per-tenant lock, so two exports of one
tenant never decide at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from collector.records import EMITTER_RANK, CallRecord, RootRecord


@dataclass(slots=True)
class StoredCall:
    trace_id: str
    span_id: str
    parent_span_id: str
    start_time: datetime
    emitter: str
    emitter_kind: str
    feature: str | None
    feature_source: str | None
    user_id: str | None
    session_id: str | None
    response_id: str | None
    request_id: str | None
    ttft_ms: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.trace_id, self.span_id)

    @property
    def rank(self) -> int:
        return EMITTER_RANK.get(self.emitter_kind, 5)

    @property
    def server_side(self) -> bool:
        return self.emitter_kind == "vllm"

    def as_context(self) -> RootRecord:
        return RootRecord(
            trace_id=self.trace_id,
            start_ns=0,
            feature=self.feature,
            user_id=self.user_id,
            session_id=self.session_id,
            feature_source=self.feature_source or "root",
        )


@dataclass(slots=True)
class ContextUpdate:
    """Attribution to fill in on a stored call, where it has none."""

    stored: StoredCall
    feature: str | None
    feature_source: str | None
    user_id: str | None
    session_id: str | None
    # The model server's time to first token, for a client span that has none (a non-streaming call):
    # self-hosted pricing splits a call's busy time into prefill and decode by it.
    ttft_ms: float | None = None


@dataclass(slots=True)
class Plan:
    insert: list[CallRecord] = field(default_factory=list)
    delete: list[StoredCall] = field(default_factory=list)
    updates: list[ContextUpdate] = field(default_factory=list)
    already_stored: int = 0


def _update_from(stored: StoredCall, source: CallRecord | RootRecord) -> ContextUpdate | None:
    feature = source.feature if stored.feature_source is None else None
    update = ContextUpdate(
        stored=stored,
        feature=feature,
        feature_source=source.feature_source if feature is not None else None,
        user_id=source.user_id if stored.user_id is None else None,
        session_id=source.session_id if stored.session_id is None else None,
    )
    if update.feature is None and update.user_id is None and update.session_id is None:
        return None
    return update


def plan_nested(calls: list[CallRecord], stored: list[StoredCall]) -> Plan:
    """Drop retried spans and resolve wrapper/leaf pairs split across exports."""
    plan = Plan()
    by_key = {s.key: s for s in stored}
    children: dict[tuple[str, str], list[StoredCall]] = {}
    for s in stored:
        if s.parent_span_id:
            children.setdefault((s.trace_id, s.parent_span_id), []).append(s)
    deleted: set[tuple[str, str]] = set()

    for call in calls:
        key = (call.trace_id, call.span_id)
        if key in by_key:
            plan.already_stored += 1  # a retried export: stored the first time
            continue
        below = [c for c in children.get(key, []) if c.key not in deleted]
        if below:
            child = below[0]
            if child.server_side and not call.server_side:
                plan.delete.append(child)  # the model server's view gives way to the client's
                deleted.add(child.key)
                call.adopt_context(child.as_context())
                if call.ttft_ms is None:
                    call.ttft_ms = child.ttft_ms
            else:
                # This span wraps a call already stored (a framework span around the SDK's span).
                update = _update_from(child, call)
                if update is not None:
                    plan.updates.append(update)
                continue
        parent = by_key.get((call.trace_id, call.parent_span_id)) if call.parent_span_id else None
        if parent is not None and parent.key not in deleted:
            if call.server_side and not parent.server_side:
                # The client span of this call is already stored; it takes the server's first-token time.
                if parent.ttft_ms is None and call.ttft_ms is not None:
                    plan.updates.append(ContextUpdate(parent, None, None, None, None, call.ttft_ms))
                continue
            plan.delete.append(parent)  # the stored span was a wrapper of this one
            deleted.add(parent.key)
            call.adopt_context(parent.as_context())
        plan.insert.append(call)
    return plan


def plan_duplicates(plan: Plan, stored: list[StoredCall]) -> None:
    """Resolve calls that report a provider request another emitter already reported."""
    by_provider_key: dict[str, list[StoredCall]] = {}
    for s in stored:
        for k in (s.response_id, s.request_id):
            if k:
                by_provider_key.setdefault(k, []).append(s)
    deleted = {s.key for s in plan.delete}
    kept: list[CallRecord] = []
    for call in plan.insert:
        rival = next(
            (
                s
                for k in call.provider_keys
                for s in by_provider_key.get(k, [])
                if s.emitter != call.emitter and s.key not in deleted
            ),
            None,
        )
        if rival is None:
            kept.append(call)
        elif call.rank < rival.rank:
            plan.delete.append(rival)
            deleted.add(rival.key)
            call.adopt_context(rival.as_context())
            kept.append(call)
        else:
            update = _update_from(rival, call)
            if update is not None:
                plan.updates.append(update)
    plan.insert = kept


def plan_root_updates(plan: Plan, stored: list[StoredCall], roots: list[RootRecord]) -> None:
    """Stored calls still waiting for their trace's root take it from this export."""
    by_trace = {r.trace_id: r for r in roots}
    deleted = {s.key for s in plan.delete}
    for s in stored:
        if s.feature_source is None and s.key not in deleted:
            root = by_trace.get(s.trace_id)
            if root is not None:
                update = _update_from(s, root)
                if update is not None:
                    plan.updates.append(update)

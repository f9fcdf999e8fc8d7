"""Every write about usage: recording a call (the one function every upstream call uses),
reserving a call's maximum cost while it runs, recording calls whose process died, and
rebuilding the daily roll-ups. Sync; call through database_sync_to_async from async code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Max, Min, Q, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from conversations.tokens import count_tokens
from usage.histogram import bucket_expression, bucket_of
from usage.meter import CallContext, UsageCall
from usage.models import (
    ConversationUsage,
    DailyConversationUsage,
    DailyModelUsage,
    DailyTtftHistogram,
    DailyUserUsage,
    Outcome,
    UsageRecord,
    UsageReservation,
)

logger = logging.getLogger(__name__)


def reply_call_id(reply_id: int) -> str:
    return f"reply:{reply_id}"


def call_context(
    *,
    call_id: str,
    kind: str,
    user: Any,
    team: Any,
    conversation_id: UUID | None,
    model: Any,
    estimated_prompt_tokens: int = 0,
) -> CallContext:
    """Everything a call's record needs that is known before it starts (prices included: the
    cost is computed from the prices at the time of the call)."""
    provider = model.provider if model is not None else None
    return CallContext(
        call_id=call_id,
        kind=kind,
        user_id=user.pk if user is not None else None,
        username=user.get_username() if user is not None else "",
        team_id=team.pk if team is not None else None,
        team_name=team.name if team is not None else "",
        conversation_id=conversation_id,
        model_id=model.pk if model is not None else None,
        model_name=model.label if model is not None else "",
        provider_id=provider.pk if provider is not None else None,
        provider_name=provider.name if provider is not None else "",
        input_price_per_mtok=getattr(model, "input_price_per_mtok", None),
        output_price_per_mtok=getattr(model, "output_price_per_mtok", None),
        estimated_prompt_tokens=estimated_prompt_tokens,
    )


def related_call_context(
    *,
    parent: CallContext,
    call_id: str,
    kind: str,
    chat_model_id: int,
    estimated_prompt_tokens: int,
) -> CallContext:
    """A call made on behalf of another (a summary for a reply): the same user, team and
    conversation, charged at the prices of the model that makes it. Sync."""
    from dataclasses import replace

    from providers.models import ChatModel

    model = ChatModel.objects.select_related("provider").filter(pk=chat_model_id).first()
    return replace(
        parent,
        call_id=call_id,
        kind=kind,
        model_id=model.pk if model else None,
        model_name=model.label if model else "",
        provider_id=model.provider_id if model else None,
        provider_name=model.provider.name if model else "",
        input_price_per_mtok=model.input_price_per_mtok if model else None,
        output_price_per_mtok=model.output_price_per_mtok if model else None,
        estimated_prompt_tokens=estimated_prompt_tokens,
    )


# --- recording ---------------------------------------------------------------------------------


def usage_record_call(*, call: UsageCall) -> bool:
    """Record one upstream call, exactly once: the record, its roll-ups and the release of its
    reservation commit together, and a second record for the same ``call_id`` (a retry of this
    write, or the orphan sweep racing the generation) is ignored. Returns whether it was new.

    Sync. Safe inside a caller's transaction (it uses a savepoint).
    """
    context = call.context
    with transaction.atomic():
        UsageReservation.objects.filter(call_id=context.call_id).delete()
        try:
            with transaction.atomic():
                record = UsageRecord.objects.create(
                    call_id=context.call_id,
                    kind=context.kind,
                    started_at=call.started_at,
                    user_id=context.user_id,
                    username=context.username,
                    team_id=context.team_id,
                    team_name=context.team_name,
                    conversation_id=context.conversation_id,
                    provider_id=context.provider_id,
                    provider_name=context.provider_name,
                    model_id=context.model_id,
                    model_name=context.model_name,
                    prompt_tokens=call.prompt_tokens,
                    completion_tokens=call.completion_tokens,
                    tokens_estimated=call.tokens_estimated,
                    input_price_per_mtok=context.input_price_per_mtok,
                    output_price_per_mtok=context.output_price_per_mtok,
                    cost=call.cost,
                    ttft_ms=call.ttft_ms,
                    duration_ms=call.duration_ms,
                    outcome=call.outcome,
                    error_kind=call.error_kind[:40],
                    retries=min(call.retries, 32767),
                )
        except IntegrityError:
            return False
        _rollups_add(record)
    return True


def _upsert(
    model: type,
    keys: Mapping[str, object],
    labels: Mapping[str, object],
    counters: Mapping[str, object],
    bounds: Mapping[str, tuple[str, object]] | None = None,
) -> None:
    """INSERT … ON CONFLICT DO UPDATE adding the counters, replacing the labels, and keeping
    the least or greatest of each bound, e.g. {"first_day": ("MIN", day)} (PostgreSQL and
    SQLite alike)."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    bounds = bounds or {}
    columns = [*keys, *labels, *counters, *bounds]
    updates = [f"{quote(c)} = {table}.{quote(c)} + EXCLUDED.{quote(c)}" for c in counters]
    updates += [f"{quote(c)} = EXCLUDED.{quote(c)}" for c in labels]
    for column, (kind, _) in bounds.items():
        # MIN()/MAX() of two values: LEAST/GREATEST on PostgreSQL, MIN/MAX on SQLite.
        function = {"MIN": "LEAST", "MAX": "GREATEST"}[kind]
        if connection.vendor == "sqlite":
            function = kind
        updates.append(
            f"{quote(column)} = {function}({table}.{quote(column)}, EXCLUDED.{quote(column)})"
        )
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO UPDATE SET {', '.join(updates)}"
    )
    values = {**keys, **labels, **counters, **{c: value for c, (_, value) in bounds.items()}}
    # Each value as its field stores it (UUIDs and decimals differ between databases).
    params = [
        model._meta.get_field(name).get_db_prep_save(value, connection)
        for name, value in values.items()
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _rollups_add(record: UsageRecord) -> None:
    day = timezone.localdate(record.started_at)
    team_key = record.team_id or 0
    counters = {
        "calls": 1,
        "errors": 1 if record.outcome == Outcome.ERROR else 0,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cost": record.cost,
    }
    _upsert(
        DailyModelUsage,
        {"day": day, "team_key": team_key, "model_key": record.model_id or 0},
        {
            "model_name": record.model_name,
            "provider_name": record.provider_name,
            "team_name": record.team_name,
        },
        counters,
    )
    _upsert(
        DailyUserUsage,
        {"day": day, "team_key": team_key, "user_key": record.user_id or 0},
        {"username": record.username},
        counters,
    )
    if record.conversation_id is not None:
        _upsert(
            DailyConversationUsage,
            {"day": day, "team_key": team_key, "conversation_key": record.conversation_id},
            {"user_key": record.user_id or 0, "username": record.username},
            counters,
        )
    if record.conversation_id is not None:
        _upsert(
            ConversationUsage,
            {"team_key": team_key, "conversation_key": record.conversation_id},
            {"user_key": record.user_id or 0, "username": record.username},
            {**counters, "tokens": record.prompt_tokens + record.completion_tokens},
            {"first_day": ("MIN", day), "last_day": ("MAX", day)},
        )
    if record.ttft_ms is not None:
        _upsert(
            DailyTtftHistogram,
            {
                "day": day,
                "team_key": team_key,
                "model_key": record.model_id or 0,
                "bucket": bucket_of(record.ttft_ms),
            },
            {},
            {"count": 1},
        )


# --- reservations ------------------------------------------------------------------------------


def usage_reserve(*, context: CallContext, max_completion_tokens: int) -> UsageReservation:
    """Count a call against its user's and team's budgets while it runs, at the most it can
    cost (its prompt estimate plus max_tokens). Call inside the transaction that admitted it
    (usage.limits.limits_admit), so that concurrent sends see each other's reservations."""
    tokens = context.estimated_prompt_tokens + max_completion_tokens
    return UsageReservation.objects.create(
        call_id=context.call_id,
        user_id=context.user_id,
        team_id=context.team_id,
        tokens=tokens,
        cost=context.cost(context.estimated_prompt_tokens, max_completion_tokens),
        estimated_prompt_tokens=context.estimated_prompt_tokens,
    )


# --- calls whose process died ------------------------------------------------------------------


def usage_record_interrupted_replies(*, replies: Iterable[Any]) -> int:
    """Record replies that the orphan sweep closed (their process died mid-call), with
    estimated tokens. Idempotent: a reply already recorded is skipped. Sync; call inside the
    sweep's transaction. Returns how many records were created."""
    from conversations.models import Conversation

    replies = list(replies)
    if not replies:
        return 0
    reservations = {
        r.call_id: r
        for r in UsageReservation.objects.filter(
            call_id__in=[reply_call_id(reply.id) for reply in replies]
        )
    }
    conversations = Conversation.objects.select_related("owner", "team").in_bulk(
        {reply.conversation_id for reply in replies}
    )
    created = 0
    for reply in replies:
        conversation = conversations.get(reply.conversation_id)
        if conversation is None:
            continue
        model = reply.model
        reservation = reservations.get(reply_call_id(reply.id))
        context = call_context(
            call_id=reply_call_id(reply.id),
            kind="reply",
            user=conversation.owner,
            team=conversation.team,
            conversation_id=conversation.id,
            model=model,
            estimated_prompt_tokens=reservation.estimated_prompt_tokens if reservation else 0,
        )
        started_at = reply.created_at
        call = UsageCall(
            context=context,
            started_at=started_at,
            duration_ms=max(0, round((reply.updated_at - started_at).total_seconds() * 1000)),
            ttft_ms=None,
            prompt_tokens=context.estimated_prompt_tokens,
            completion_tokens=count_tokens(reply.content) + count_tokens(reply.reasoning),
            tokens_estimated=True,
            outcome=Outcome.INTERRUPTED,
            error_kind="interrupted",
        )
        created += usage_record_call(call=call)
    return created


# --- roll-ups ----------------------------------------------------------------------------------


def usage_rollups_rebuild() -> None:
    """Recompute the roll-ups from the records, in the database: INSERT … SELECT … GROUP BY,
    never a loop over records. One transaction: readers see the old or the new roll-ups."""
    grouped = UsageRecord.objects.annotate(
        r_day=TruncDate("started_at"), r_team=Coalesce("team_id", Value(0))
    )
    sums = {
        "r_calls": Count("id"),
        "r_errors": Count("id", filter=Q(outcome=Outcome.ERROR)),
        "r_prompt": Coalesce(Sum("prompt_tokens"), Value(0)),
        "r_completion": Coalesce(Sum("completion_tokens"), Value(0)),
        "r_cost": Coalesce(Sum("cost"), Value(Decimal(0))),
    }
    counter_columns = ["calls", "errors", "prompt_tokens", "completion_tokens", "cost"]
    counter_aliases = ["r_calls", "r_errors", "r_prompt", "r_completion", "r_cost"]
    plans = [
        (
            DailyModelUsage,
            grouped.annotate(r_key=Coalesce("model_id", Value(0)))
            .values("r_day", "r_team", "r_key")
            .annotate(
                **sums,
                r_model=Max("model_name"),
                r_provider=Max("provider_name"),
                r_team_name=Max("team_name"),
            ),
            [
                "day",
                "team_key",
                "model_key",
                *counter_columns,
                "model_name",
                "provider_name",
                "team_name",
            ],
            ["r_day", "r_team", "r_key", *counter_aliases, "r_model", "r_provider", "r_team_name"],
        ),
        (
            DailyUserUsage,
            grouped.annotate(r_key=Coalesce("user_id", Value(0)))
            .values("r_day", "r_team", "r_key")
            .annotate(**sums, r_name=Max("username")),
            ["day", "team_key", "user_key", *counter_columns, "username"],
            ["r_day", "r_team", "r_key", *counter_aliases, "r_name"],
        ),
        (
            DailyConversationUsage,
            grouped.filter(conversation_id__isnull=False)
            .values("r_day", "r_team", "conversation_id")
            .annotate(**sums, r_user=Coalesce(Max("user_id"), Value(0)), r_name=Max("username")),
            ["day", "team_key", "conversation_key", *counter_columns, "user_key", "username"],
            ["r_day", "r_team", "conversation_id", *counter_aliases, "r_user", "r_name"],
        ),
        (
            ConversationUsage,
            grouped.filter(conversation_id__isnull=False)
            .values("r_team", "conversation_id")
            .annotate(
                **sums,
                r_tokens=Coalesce(Sum("prompt_tokens"), Value(0))
                + Coalesce(Sum("completion_tokens"), Value(0)),
                r_user=Coalesce(Max("user_id"), Value(0)),
                r_name=Max("username"),
                r_first=Min("r_day"),
                r_last=Max("r_day"),
            ),
            [
                "team_key",
                "conversation_key",
                *counter_columns,
                "tokens",
                "user_key",
                "username",
                "first_day",
                "last_day",
            ],
            [
                "r_team",
                "conversation_id",
                *counter_aliases,
                "r_tokens",
                "r_user",
                "r_name",
                "r_first",
                "r_last",
            ],
        ),
        (
            DailyTtftHistogram,
            grouped.filter(ttft_ms__isnull=False)
            .annotate(r_key=Coalesce("model_id", Value(0)), r_bucket=bucket_expression("ttft_ms"))
            .values("r_day", "r_team", "r_key", "r_bucket")
            .annotate(r_count=Count("id")),
            ["day", "team_key", "model_key", "bucket", "count"],
            ["r_day", "r_team", "r_key", "r_bucket", "r_count"],
        ),
    ]
    quote = connection.ops.quote_name
    with transaction.atomic(), connection.cursor() as cursor:
        for model, queryset, columns, aliases in plans:
            model.objects.all().delete()
            sql, params = queryset.order_by().query.sql_with_params()
            select = ", ".join(f"sub.{quote(alias)}" for alias in aliases)
            cursor.execute(
                f"INSERT INTO {quote(model._meta.db_table)} "
                f"({', '.join(quote(c) for c in columns)}) SELECT {select} FROM ({sql}) sub",
                params,
            )


# --- the audit log -----------------------------------------------------------------------------


def conversation_review_record(*, viewer: Any, conversation: Any, ip_address: str | None) -> None:
    """Write down that staff opened someone's conversation (before it is shown)."""
    from usage.models import ConversationReview

    ConversationReview.objects.create(
        viewer=viewer,
        viewer_name=viewer.get_username(),
        conversation=conversation,
        conversation_key=conversation.id,
        owner_name=conversation.owner.get_username(),
        ip_address=ip_address or None,
    )

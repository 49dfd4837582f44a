"""The write of an answer onto its refund: :func:`write_answers`, conditional on the state the
answer was decided from, and :func:`record_answer` for the answers that come to the app.

What an answer may change is decided in :mod:`hsq_refunds.rules`; the rows are
:mod:`hsq_refunds.models`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django.db import connections, models, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q
from django.utils import timezone

from .choices import Source
from .columns import storable
from .models import Refund, RefundQuery, _updates_return_rows
from .rules import Decision
from .signals import send_refund_signals

__all__ = [
    "AnsweredRefund",
    "audit_row",
    "locked_refund",
    "record_answer",
    "storable_changes",
    "write_answers",
]


@dataclass
class AnsweredRefund:
    """One refund, as it was read, with the decision the rules took on an answer about it."""

    refund: Refund
    decision: Decision
    source: str = Source.QUERY
    at: datetime | None = None
    duration_ms: int | None = None


@functools.cache
def _text_widths(model: type[models.Model]) -> dict[str, int | None]:
    """The width of each text field of ``model`` by name (``None``: a text column)."""
    return {
        field.name: field.max_length
        for field in model._meta.concrete_fields
        if isinstance(field, models.CharField | models.TextField)
    }


def storable_changes(model: type[models.Model], changes: dict[str, Any]) -> dict[str, Any]:
    """Field values as the database can hold them: text made :func:`storable` and cut to its
    column (so no answer from the gateway can make a write fail)."""
    widths = _text_widths(model)
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if isinstance(value, str):
            width = widths.get(name)
            if value.isascii() and "\x00" not in value:  # nothing to replace: only cut
                value = value if width is None else value[:width]
            else:
                value = storable(value, width)
        out[name] = value
    return out


def write_answers(answers: Iterable[AnsweredRefund], *, claim_token: str | None = None) -> set[int]:
    """Write decisions to their refunds, each only onto the state it was decided from.

    Every answer comes through here, whether a query's, an application's or a notification's.
    Each refund is written only if its ``version`` is still the one the decision was taken on
    (every write raises it, so a decision taken on a state that changed since is written
    nowhere) and, with ``claim_token``, only if the claim is still the caller's (the write
    releases it); then one ``INSERT`` of the audit rows of the refunds written. One
    transaction: a refund's new state and its audit row are committed together or not at all,
    and the signals are sent after commit, for the refunds written. Returns the ids written.

    On PostgreSQL and SQLite 3.35+ the refunds that change the same fields are written by one
    ``UPDATE ... FROM <their rows> ... RETURNING`` (the rows one JSON parameter, see
    :func:`_rows_source`; the guard on version and claim applies to each row on its own), the
    audit rows by one ``INSERT``; elsewhere, and for a batch naming one refund twice, by one
    ``UPDATE`` per refund and ``bulk_create``. Only the instances of the refunds written are
    changed, and they are put back if the transaction does not commit.
    """
    items = list(answers)
    if not items:
        return set()
    using = router.db_for_write(Refund)
    connection = connections[using]
    planned = [(item, _planned_changes(item, claim_token)) for item in items]
    batched = _updates_return_rows(connection) and len({item.refund.pk for item in items}) == len(
        items
    )
    written: set[int] = set()
    previous: list[tuple[Refund, dict[str, Any]]] = []
    try:
        with transaction.atomic(using=using):
            if batched:
                written = _update_batched(connection, planned, claim_token)
            else:
                written = _update_one_by_one(using, planned, claim_token)
            audit: list[dict[str, Any]] = []
            for item, changes in planned:
                refund = item.refund
                if refund.pk not in written:
                    continue
                # The instance shows what was written (the signals carry it); put back below
                # if the transaction does not commit.
                previous.append((refund, {name: getattr(refund, name) for name in changes}))
                for name, value in changes.items():
                    setattr(refund, name, value)
                audit.append(_audit_values(item))
                send_refund_signals(refund, item.decision, using=using)
            if audit and batched:
                _insert_audit(connection, audit)
            elif audit:
                RefundQuery.objects.using(using).bulk_create(RefundQuery(**row) for row in audit)
    except BaseException:
        for refund, values in previous:
            for name, value in values.items():
                setattr(refund, name, value)
        raise
    return written


def _planned_changes(item: AnsweredRefund, claim_token: str | None) -> dict[str, Any]:
    """The field values one answer writes onto its refund (storable, version raised)."""
    changes = storable_changes(Refund, item.decision.changes)
    changes["version"] = item.refund.version + 1
    if "final_result" in changes:
        changes["final_source"] = item.source
    if claim_token is not None:
        changes.update(claimed_until=None, claim_token="")
    return changes


def _update_one_by_one(
    using: str, planned: list[tuple[AnsweredRefund, dict[str, Any]]], claim_token: str | None
) -> set[int]:
    written: set[int] = set()
    for item, changes in planned:
        refund = item.refund
        guard = Q(pk=refund.pk, version=refund.version)
        if claim_token is not None:
            guard &= Q(claim_token=claim_token)
        # Not written yet: a refund named twice is written at most once (its version moved).
        if refund.pk not in written and Refund.objects.using(using).filter(guard).update(**changes):
            written.add(refund.pk)
    return written


def _max_parameters(connection: BaseDatabaseWrapper) -> int:
    """How many parameters one statement may carry on ``connection``."""
    if connection.vendor == "sqlite":
        import sqlite3

        connection.ensure_connection()
        return int(connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    return connection.features.max_query_params or 65535


def _update_batched(
    connection: BaseDatabaseWrapper,
    planned: list[tuple[AnsweredRefund, dict[str, Any]]],
    claim_token: str | None,
) -> set[int]:
    """One ``UPDATE`` per set of fields changed (and per statement's worth of parameters)."""
    groups: dict[tuple[str, ...], list[tuple[AnsweredRefund, dict[str, Any]]]] = {}
    for item, changes in planned:
        groups.setdefault(tuple(sorted(changes)), []).append((item, changes))
    room = _max_parameters(connection) - 1
    written: set[int] = set()
    for names, rows in groups.items():
        per_statement = len(rows) if _reads_json_rows(connection) else room // (len(names) + 2)
        per_statement = max(1, per_statement)
        for start in range(0, len(rows), per_statement):
            written |= _update_rows(
                connection, names, rows[start : start + per_statement], claim_token
            )
    return written


def _update_rows(
    connection: BaseDatabaseWrapper,
    names: tuple[str, ...],
    rows: list[tuple[AnsweredRefund, dict[str, Any]]],
    claim_token: str | None,
) -> set[int]:
    """``UPDATE refund SET <names> FROM <rows of (pk, version read, values...)>``, each row
    guarded by its own version (and the claim); returns the ids written."""
    meta = Refund._meta
    fields = [cast(models.Field, meta.get_field(name)) for name in names]
    quote = connection.ops.quote_name
    pk_column = quote(str(meta.pk.column))
    values = [
        (
            item.refund.pk,
            item.refund.version,
            *(_db_value(field, changes[field.name], connection) for field in fields),
        )
        for item, changes in rows
    ]
    columns = ["pk", "was", *(f"c{index}" for index in range(len(fields)))]
    types = [str(meta.pk.db_type(connection)), "integer"]
    types += [_cast_type(field, connection) for field in fields]
    source, refs, params = _rows_source(connection, columns, types, values)
    returning = f"r.{pk_column}" if connection.vendor == "postgresql" else pk_column
    assignments = ", ".join(
        f"{quote(str(field.column))} = {ref}" for field, ref in zip(fields, refs[2:], strict=True)
    )
    guard = f"r.{pk_column} = {refs[0]} AND r.{quote('version')} = {refs[1]}"
    if claim_token is not None:
        guard += f" AND r.{quote('claim_token')} = %s"
        params.append(claim_token)
    # Only the model's own quoted names are put into the text; every value is a parameter.
    statement = (
        f"UPDATE {quote(meta.db_table)} AS r SET {assignments} "  # noqa: S608
        f"FROM {source} WHERE {guard} RETURNING {returning}"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return {row[0] for row in cursor.fetchall()}


def _rows_source(
    connection: BaseDatabaseWrapper,
    columns: list[str],
    types: list[str],
    values: Sequence[Sequence[Any]],
) -> tuple[str, list[str], list[Any]]:
    """The rows ``values`` as a ``FROM`` source: its SQL, an expression per column, and its
    parameters.

    Where the database reads JSON, the rows are one JSON parameter: ``jsonb_to_recordset``
    with typed columns on PostgreSQL, ``json_each`` on SQLite. The statement's text then
    stays the same whatever the number of rows, which matters twice: psycopg parses a
    statement's placeholders (and would quote arrays element by element) in Python, caching
    that only for short statements; and SQLite's driver keeps the last 128 statements
    prepared, which for ``VALUES`` lists of every length grows to a hundred megabytes.
    Elsewhere, a ``VALUES`` list (SQLite names its columns column1, column2, ...).
    """
    if connection.vendor == "postgresql":
        definitions = ", ".join(f"{name} {kind}" for name, kind in zip(columns, types, strict=True))
        source = f"jsonb_to_recordset(%s::jsonb) AS v({definitions})"
        return source, [f"v.{name}" for name in columns], [_json_rows(columns, values)]
    if connection.features.supports_json_field:
        refs = [f"json_extract(v.value, '$.{name}')" for name in columns]
        return "json_each(%s) AS v", refs, [_json_rows(columns, values)]
    refs = [f"v.column{index + 1}" for index in range(len(columns))]
    placeholder = f"({', '.join(['%s'] * len(columns))})"
    source = f"(VALUES {', '.join([placeholder] * len(values))}) AS v"
    return source, refs, [value for row in values for value in row]


def _json_rows(columns: list[str], rows: Iterable[Sequence[Any]]) -> str:
    """``rows`` as a JSON array of objects keyed by ``columns``: times in ISO 8601 with their
    offset, which PostgreSQL reads back exactly. (Text reaching here is :func:`storable`:
    no NUL, which ``jsonb`` refuses.)"""
    return json.dumps(
        [dict(zip(columns, row, strict=True)) for row in rows],
        ensure_ascii=False,
        default=_json_time,
    )


def _json_time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not written through JSON")


def _insert_audit(connection: BaseDatabaseWrapper, rows: list[dict[str, Any]]) -> None:
    """``INSERT`` the audit rows (field values by attribute name; the others take their
    defaults): one statement, or as many as a ``VALUES`` list's parameters need."""
    fields = [field for field in RefundQuery._meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    table = quote(RefundQuery._meta.db_table)
    columns = ", ".join(quote(str(field.column)) for field in fields)
    values = [
        [
            _db_value(field, row[field.attname], connection)
            if field.attname in row
            else field.get_db_prep_save(field.get_default(), connection=connection)
            for field in fields
        ]
        for row in rows
    ]
    names = [f"c{index}" for index in range(len(fields))]
    types = [_cast_type(field, connection) for field in fields]
    per_statement = len(values)
    if not _reads_json_rows(connection):
        per_statement = max(1, _max_parameters(connection) // len(fields))
    with connection.cursor() as cursor:
        for start in range(0, len(values), per_statement):
            source, refs, params = _rows_source(
                connection, names, types, values[start : start + per_statement]
            )
            # Only the model's own quoted names are put into the text; values are parameters.
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {', '.join(refs)} FROM {source}",  # noqa: S608
                params,
            )


def _reads_json_rows(connection: BaseDatabaseWrapper) -> bool:
    """Whether :func:`_rows_source` passes the rows as one JSON parameter."""
    return connection.vendor == "postgresql" or bool(connection.features.supports_json_field)


#: Fields whose database value is the Python value itself, for values of exactly this type
#: (and ``None``): what ``get_db_prep_save`` would return, without its cost per value.
_PLAIN_VALUES: dict[type, type] = {
    models.CharField: str,
    models.TextField: str,
    models.IntegerField: int,
    models.BigIntegerField: int,
    models.SmallIntegerField: int,
    models.PositiveIntegerField: int,
    models.PositiveBigIntegerField: int,
    models.PositiveSmallIntegerField: int,
    models.BooleanField: bool,
}


def _db_value(field: models.Field, value: Any, connection: BaseDatabaseWrapper) -> Any:
    """``field.get_db_prep_save(value)``, quick for plain text, numbers and flags."""
    kind = type(field)
    plain = _PLAIN_VALUES.get(kind)
    if plain is not None and (value is None or type(value) is plain):
        return value
    if kind is models.DateTimeField and isinstance(value, datetime) and value.tzinfo is not None:
        return connection.ops.adapt_datetimefield_value(value)
    return field.get_db_prep_save(value, connection=connection)


def _cast_type(field: models.Field, connection: BaseDatabaseWrapper) -> str:
    """The type a column's values are cast to on PostgreSQL: text for text (the column's own
    width is then checked on assignment, as by any write), else the column's type."""
    if isinstance(field, models.CharField | models.TextField):
        return "text"
    return str(field.db_type(connection))


def audit_row(item: AnsweredRefund, outcome: str | None = None) -> RefundQuery:
    """The audit row of one answer (``outcome`` overrides the decision's)."""
    return RefundQuery(**_audit_values(item, outcome))


def _audit_values(item: AnsweredRefund, outcome: str | None = None) -> dict[str, Any]:
    """The field values of :func:`audit_row`, by attribute name."""
    log = storable_changes(RefundQuery, item.decision.log)
    if outcome is not None:
        log["outcome"] = outcome
    return {
        "refund_id": item.refund.pk,
        "queried_at": item.at or timezone.now(),
        "duration_ms": item.duration_ms,
        "source": item.source,
        **log,
    }


def record_answer(
    refund: Refund,
    decide: Callable[[Refund], Decision | None],
    *,
    source: str,
    at: datetime | None = None,
) -> tuple[Refund, Decision | None]:
    """Decide on one answer about ``refund`` and write it, one writer of the refund at a time.

    For the answers that come to the app rather than from its own sync (an application's,
    a notification, a person's action): the refund is read again under a row lock
    (``SELECT ... FOR UPDATE``; on SQLite, whose locks are per database, the write lock taken
    by a first ``UPDATE``), ``decide`` is called with it, and its decision written in the same
    transaction. Concurrent writers of one refund are thus decided one after the other, each
    on the state the previous one left, never retried into an error. ``decide`` may return
    ``None``: nothing to write (a replay of an answer already recorded). Returns the refund as
    written and the decision.
    """
    using = router.db_for_write(Refund)
    with transaction.atomic(using=using):
        current = locked_refund(refund.pk, using=using)
        decision = decide(current)
        if decision is None:
            return current, None
        if not write_answers([AnsweredRefund(current, decision, source=source, at=at)]):
            raise RuntimeError(f"transNo={current.trans_no}: not written under its row lock")
    return current, decision


def locked_refund(pk: int, *, using: str | None = None) -> Refund:
    """The refund ``pk``, read under a lock held until the transaction ends (call it inside
    ``transaction.atomic()``): a row lock where the database has them, else (SQLite) the
    database's write lock, taken by an ``UPDATE`` that changes nothing."""
    using = using or router.db_for_write(Refund)
    rows = Refund.objects.using(using).filter(pk=pk)
    if connections[using].features.has_select_for_update:
        return rows.select_for_update().get()
    rows.update(version=models.F("version"))
    return rows.get()

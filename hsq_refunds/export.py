"""Refunds as CSV: one column definition for the admin's export and ``manage.py export_refunds``.

The file is UTF-8 with a byte-order mark (so that Excel reads the Chinese text), with headers
in the active language. Amounts are given twice, in yuan with two decimals and in fen; times
are Beijing time with the offset (``2026-12-01 10:00:00+08:00``), whatever ``TIME_ZONE`` is.
Any cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a ``'``
in front, so that a spreadsheet shows it as text instead of running it as a formula (text from
the gateway, such as ``respMsg``, reaches the file).

Rows are read with ``QuerySet.iterator(chunk_size=...)`` and written out in pieces, so that an
export of any size holds only one chunk of rows in memory (:func:`csv_chunks`,
:func:`streaming_response`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .choices import AttentionReason, Status
from .models import Refund
from .money import fen_to_yuan

__all__ = [
    "BEIJING",
    "BOM",
    "COLUMNS",
    "Column",
    "CsvExport",
    "ExportAdminMixin",
    "csv_chunks",
    "export_filename",
    "neutralize",
    "streaming_response",
]

BEIJING = ZoneInfo("Asia/Shanghai")
BOM = "\ufeff"
#: Rows read from the database at a time.
CHUNK_SIZE = 2000
#: About how many characters are sent at a time.
_PIECE = 64 * 1024
_FORMULA_STARTS = frozenset("=+-@\t\r")


@dataclass(frozen=True)
class Column:
    """One CSV column: a stable ``key``, its header (translated when the file is made), the
    ``Refund`` field it reads and how the value becomes text (given the labels of the
    choices in the active language)."""

    key: str
    header: Any
    field: str
    format: Callable[[Any, Labels], str]


@dataclass(frozen=True)
class Labels:
    """The choices' labels in the language of the file, looked up once per file."""

    status: dict[str, str]
    attention: dict[str, str]

    @classmethod
    def current(cls) -> Labels:
        return cls(
            status={value: str(label) for value, label in Status.choices},
            attention={value: str(label) for value, label in AttentionReason.choices},
        )


def _text(value: Any, labels: Labels) -> str:
    return "" if value is None else str(value)


def _yuan(value: int | None, labels: Labels) -> str:
    return "" if value is None else str(fen_to_yuan(value))


def _time(value: datetime | None, labels: Labels) -> str:
    if value is None:
        return ""
    return value.astimezone(BEIJING).isoformat(sep=" ", timespec="seconds")


def _status_label(value: str, labels: Labels) -> str:
    return labels.status.get(value, value)


def _attention_label(value: str, labels: Labels) -> str:
    return labels.attention.get(value, value) if value else ""


def _flag(value: bool, labels: Labels) -> str:
    return "1" if value else "0"


#: The columns of every export, in order.
COLUMNS: tuple[Column, ...] = (
    Column("trans_no", _("refund order number"), "trans_no", _text),
    Column("orig_trans_no", _("original order number"), "orig_trans_no", _text),
    Column("merchant_no", _("merchant number"), "merchant_no", _text),
    Column("trade_no", _("HSQ trade number"), "trade_no", _text),
    Column("status", _("status"), "status", _text),
    Column("status_label", _("status description"), "status", _status_label),
    Column("amount_yuan", _("amount (yuan)"), "amount", _yuan),
    Column("amount_fen", _("amount (fen)"), "amount", _text),
    Column("reported_amount_yuan", _("amount reported by HSQ (yuan)"), "reported_amount", _yuan),
    Column("reported_amount_fen", _("amount reported by HSQ (fen)"), "reported_amount", _text),
    Column("applied_at", _("applied at"), "applied_at", _time),
    Column("finished_at", _("finished at"), "finished_at", _time),
    Column("last_queried_at", _("last queried at"), "last_queried_at", _time),
    Column("resp_code", _("response code"), "resp_code", _text),
    Column("resp_msg", _("response message"), "resp_msg", _text),
    Column("needs_attention", _("needs attention"), "needs_attention", _flag),
    Column("attention_reason", _("attention reason"), "attention_reason", _attention_label),
)


def neutralize(cell: str) -> str:
    """``=1+1`` -> ``'=1+1``: a cell a spreadsheet would run as a formula is shown as text."""
    return "'" + cell if cell and cell[0] in _FORMULA_STARTS else cell


class CsvExport:
    """The CSV file of a queryset, iterated in pieces of UTF-8 bytes (the first starts with the
    BOM); ``rows`` counts the refunds written so far.

    Headers and labels are taken in the language active when this is made, not when the pieces
    are read (a streamed response is read after the view has returned).
    """

    def __init__(
        self,
        queryset: QuerySet[Refund],
        *,
        columns: Sequence[Column] = COLUMNS,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.headers = [neutralize(str(column.header)) for column in columns]
        self.labels = Labels.current()
        fields = list(dict.fromkeys(column.field for column in columns))
        index = {name: position for position, name in enumerate(fields)}
        self.formats = [(index[column.field], column.format) for column in columns]
        self.queryset = queryset.values_list(*fields)
        self.chunk_size = chunk_size
        self.rows = 0

    def __iter__(self) -> Iterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        buffer.write(BOM)
        writer.writerow(self.headers)
        labels, formats = self.labels, self.formats
        for row in self.queryset.iterator(chunk_size=self.chunk_size):
            writer.writerow([neutralize(format(row[at], labels)) for at, format in formats])
            self.rows += 1
            if buffer.tell() >= _PIECE:
                yield buffer.getvalue().encode("utf-8")
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode("utf-8")


def csv_chunks(
    queryset: QuerySet[Refund],
    *,
    columns: Sequence[Column] = COLUMNS,
    chunk_size: int = CHUNK_SIZE,
) -> CsvExport:
    """The CSV file of ``queryset``, to iterate over in pieces of bytes."""
    return CsvExport(queryset, columns=columns, chunk_size=chunk_size)


def export_filename(now: datetime | None = None) -> str:
    """``refunds-20261201-100000.csv``, in Beijing time."""
    moment = (now or timezone.now()).astimezone(BEIJING)
    return f"refunds-{moment:%Y%m%d-%H%M%S}.csv"


def streaming_response(
    queryset: QuerySet[Refund], *, chunk_size: int = CHUNK_SIZE
) -> StreamingHttpResponse:
    """A download of ``queryset`` as CSV, streamed: rows are read as the response is sent."""
    response = StreamingHttpResponse(
        csv_chunks(queryset, chunk_size=chunk_size), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{export_filename()}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


class ExportAdminMixin:
    """For a ``ModelAdmin`` of :class:`~hsq_refunds.models.Refund`: the "Export CSV" action
    (selected refunds) and the ``export/`` URL behind the list's button (the refunds the list
    shows, with its filters, search and ordering, every page). Both need only the view
    permission."""

    export_chunk_size = CHUNK_SIZE

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts  # type: ignore[attr-defined]
        export = path(
            "export/",
            self.admin_site.admin_view(self.export_view),  # type: ignore[attr-defined]
            name=f"{opts.app_label}_{opts.model_name}_export",
        )
        return [export, *super().get_urls()]  # type: ignore[misc]

    @admin.action(description=_("Export CSV"), permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Refund]) -> StreamingHttpResponse:
        return streaming_response(queryset, chunk_size=self.export_chunk_size)

    def export_view(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        """The refunds of the change list with the same query string, as CSV."""
        admin_self: Any = self
        if not admin_self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = admin_self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            opts = admin_self.opts
            url = reverse(
                f"admin:{opts.app_label}_{opts.model_name}_changelist",
                current_app=admin_self.admin_site.name,
            )
            return HttpResponseRedirect(f"{url}?e=1")
        queryset = changelist.get_queryset(request)
        return streaming_response(queryset, chunk_size=self.export_chunk_size)

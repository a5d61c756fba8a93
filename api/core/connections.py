"""Connections: strict (non-null edges and nodes), counted, keyset-paginated.

Cursors encode the sort key of the row (e.g. `(created_at, id)`), not an offset, so a page
fetched after new rows arrived neither repeats nor skips anything. Only forward pagination
(`first`/`after`) is offered, as in the contract. `first` defaults to `DEFAULT_PAGE_SIZE`
and may not exceed `MAX_PAGE_SIZE` (larger is refused with INVALID).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import graphene
from django.conf import settings
from django.db.models import Q, QuerySet

from coalition.errors import InvalidInput

from .errors import api_error


def page_size_limits() -> tuple[int, int]:
    limits = getattr(settings, "API_LIMITS", {})
    return limits.get("DEFAULT_PAGE_SIZE", 20), limits.get("MAX_PAGE_SIZE", 100)


class CountableConnection(graphene.relay.Connection):
    class Meta:
        abstract = True

    total_count = graphene.Int(required=True, description="How many items in all pages.")

    @staticmethod
    def resolve_total_count(root, info):
        return root.count_total()


@dataclass
class PageData:
    """What a connection type is built from: a page of rows and how to count them all."""

    rows: list
    cursors: list[str]
    has_next_page: bool
    has_previous_page: bool
    count_total: Callable[[], int]


def _encode(values: Sequence) -> str:
    def plain(value):
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        if isinstance(value, decimal.Decimal):
            return str(value)
        return value

    raw = json.dumps([plain(value) for value in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str, fields: list, queryset: QuerySet) -> list:
    refused = InvalidInput("This cursor is not valid here", field="after")
    if not isinstance(cursor, str) or len(cursor) > 512:
        raise refused
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise refused from exc
    if not isinstance(values, list) or len(values) != len(fields):
        raise refused
    model = queryset.model
    parsed = []
    for (name, _descending), value in zip(fields, values, strict=True):
        if value is None or isinstance(value, list | dict):
            raise refused
        try:
            parsed.append(model._meta.get_field(name).to_python(value))
        except Exception as exc:  # noqa: BLE001 - any unparsable value is a bad cursor
            raise refused from exc
    return parsed


def _after(fields: list, values: list) -> Q:
    """Rows strictly after `values` in the (lexicographic) ordering."""
    condition = Q()
    for index, (name, descending) in enumerate(fields):
        step = Q(**{f"{name}__{'lt' if descending else 'gt'}": values[index]})
        for earlier in range(index):
            step &= Q(**{fields[earlier][0]: values[earlier]})
        condition |= step
    return condition


def keyset_page(
    queryset: QuerySet, *, ordering: Sequence[str], first: int | None, after: str | None
) -> PageData:
    """One page of `queryset` in `ordering` (unique, ending with the primary key)."""
    default_size, max_size = page_size_limits()
    if first is None:
        first = default_size
    if first < 0:
        raise api_error(InvalidInput("first must be zero or more", field="first"))
    if first > max_size:
        raise api_error(InvalidInput(f"first may be at most {max_size}", field="first"))
    fields = [(name.lstrip("-"), name.startswith("-")) for name in ordering]
    page = queryset.order_by(*ordering)
    if after:
        try:
            values = _decode(after, fields, queryset)
        except InvalidInput as error:
            raise api_error(error) from error
        page = page.filter(_after(fields, values))
    rows = list(page[: first + 1])
    has_next = len(rows) > first
    rows = rows[:first]
    cursors = [_encode([getattr(row, name) for name, _ in fields]) for row in rows]
    return PageData(
        rows=rows,
        cursors=cursors,
        has_next_page=has_next,
        has_previous_page=bool(after),
        count_total=queryset.count,
    )


def list_page(rows: list, *, first: int | None, after: str | None) -> PageData:
    """A page of an in-memory list (for sources that are not querysets yet)."""
    default_size, max_size = page_size_limits()
    first = default_size if first is None else first
    if first < 0 or first > max_size:
        raise api_error(InvalidInput(f"first must be from 0 to {max_size}", field="first"))
    start = 0
    if after:
        try:
            start = int(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)).decode()) + 1
        except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
            raise api_error(InvalidInput("This cursor is not valid here", field="after")) from exc
    chunk = rows[start : start + first]
    return PageData(
        rows=chunk,
        cursors=[
            base64.urlsafe_b64encode(str(start + i).encode()).decode().rstrip("=")
            for i in range(len(chunk))
        ],
        has_next_page=start + first < len(rows),
        has_previous_page=start > 0,
        count_total=lambda: len(rows),
    )


def connection_from_page(connection_type: type[CountableConnection], page: PageData):
    """The connection object graphene resolves the fields of."""
    edge_type = connection_type.Edge
    connection = connection_type(
        edges=[
            edge_type(node=row, cursor=cursor)
            for row, cursor in zip(page.rows, page.cursors, strict=True)
        ],
        page_info=graphene.relay.PageInfo(
            start_cursor=page.cursors[0] if page.cursors else None,
            end_cursor=page.cursors[-1] if page.cursors else None,
            has_next_page=page.has_next_page,
            has_previous_page=page.has_previous_page,
        ),
    )
    connection.count_total = page.count_total
    return connection


def connection_field(connection_type, description: str = "", **kwargs) -> graphene.Field:
    """`name(first: Int, after: String): XConnection!`"""
    return graphene.Field(
        connection_type,
        required=True,
        first=graphene.Int(description="Page size (default 20, at most 100)."),
        after=graphene.String(description="The endCursor of the previous page."),
        description=description,
        **kwargs,
    )

"""Set-based posting: up to 1,000 earns at one partner in one database transaction.

`points_earn_batch` writes what `points_earn` writes, row for row (transaction, entries, lot,
last activity, tier upgrade), but with a handful of statements for the whole batch instead of
a dozen per earn:

1. validate every row (a bad row is rejected with its contract code, the others go on);
2. duplicate keys inside the batch: the first valid row wins, a later row with the same
   payload is its replay, a later row with another payload an IDEMPOTENCY_CONFLICT;
3. keys already used (one query): replay, or IDEMPOTENCY_CONFLICT for that row only;
4. lock the wallets of every member left, in member-id order, in one
   `SELECT … FOR UPDATE … ORDER BY member_id` (so batches never deadlock one another, nor
   single earns, which lock one wallet), then look the keys up again under the lock;
5. members that are not active are rejected (MEMBER_NOT_ACTIVE), members without a wallet
   are not found (NOT_FOUND);
6. transactions, entries and lots in three multi-row INSERTs; a wallet a reversal took
   negative is repaid before any points go into a lot, exactly as `_credit_lots` does, row by
   row in batch order; the database triggers keep the wallet balances and check every
   transaction balances at commit;
7. last activity for every wallet moved in one UPDATE, and tier upgrades for the distinct
   members from one qualifying-points query.

Tier history: a member who crosses two thresholds within one batch gets one TierChange (to
the highest tier reached) where single earns would have written two; the tier reached is the
same.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import operator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from django.db import connection
from django.db.models import OuterRef, Subquery, Sum
from django.utils import timezone

from ..errors import (
    CoalitionError,
    IdempotencyConflict,
    InvalidInput,
    LimitExceeded,
    MemberNotActive,
    NotFound,
)
from ..models import (
    Account,
    Entry,
    IdempotencyRecord,
    LedgerTransaction,
    Member,
    MemberTier,
    PointLot,
    RedemptionHold,
)
from .idempotency import KEY_USED_ELSEWHERE, _setting, ledger_write, request_fingerprint
from .posting import (
    _require_active_partner,
    as_stored,
    lot_expiry,
    programme_get,
    system_account_id,
    validate_idempotency_key,
    validate_points,
    validate_text,
)
from .tiers import _change, qualifying, tier_for_points, tiers_ordered

Kind = LedgerTransaction.Kind
MAX_BATCH_SIZE = 1000


@dataclass(frozen=True)
class EarnRequest:
    """One earn of a batch: what `points_earn` takes, for one member."""

    member_id: int
    idempotency_key: str
    partner_points: int = 0
    operator_points: int = 0
    # Empty: the fingerprint `points_earn` would compute, so that a batch row and a single
    # earn with the same key are the same request.
    request_hash: str = ""
    reference: str = ""
    purchase_amount: Decimal | None = None
    purchase_currency: str = ""
    metadata: dict | None = None
    kind: str = Kind.EARN


class OutcomeStatus(StrEnum):
    POSTED = "posted"
    REPLAYED = "replayed"
    REJECTED = "rejected"


@dataclass
class BatchOutcome:
    """What became of one request: posted (new transaction), replayed (the transaction an
    earlier request with the same key wrote) or rejected (nothing written, with a code)."""

    index: int
    member_id: int | None
    status: OutcomeStatus
    transaction_id: int | None = None
    points: int = 0
    code: str | None = None
    message: str = ""
    field: str | None = None
    # Posted rows: the transaction written, built on first use (see `transaction`).
    _transaction: Any = dataclass_field(default=None, repr=False, compare=False)

    @property
    def accepted(self) -> bool:
        return self.status != OutcomeStatus.REJECTED

    @property
    def replayed(self) -> bool:
        return self.status == OutcomeStatus.REPLAYED

    @property
    def transaction(self) -> LedgerTransaction | None:
        """Posted rows: the transaction written, for follow-up work in the same database
        transaction (made from what was written, without a query, on first use)."""
        if callable(self._transaction):
            self._transaction = self._transaction()
        return self._transaction


@dataclass
class _Row:
    index: int
    request: EarnRequest
    total: int
    request_hash: str
    reference: str


def _rejected(index: int, member_id: int | None, error: CoalitionError) -> BatchOutcome:
    return BatchOutcome(
        index=index,
        member_id=member_id,
        status=OutcomeStatus.REJECTED,
        code=str(error.code),
        message=error.message,
        field=error.field,
    )


def _conflict(index: int, member_id: int | None) -> BatchOutcome:
    return _rejected(
        index,
        member_id,
        IdempotencyConflict(KEY_USED_ELSEWHERE, field="idempotencyKey"),
    )


def _validate(index: int, request: EarnRequest, partner: Any, max_points: int) -> _Row:
    """The checks `points_earn` makes before it looks at the ledger.

    `max_points`: the setting `validate_points` reads, read once for the batch."""
    if request.kind not in (Kind.EARN, Kind.BONUS):
        raise InvalidInput(f"Cannot earn as {request.kind}", field="kind")
    if isinstance(request.member_id, bool) or not isinstance(request.member_id, int):
        raise InvalidInput("A member id is required", field="memberId")
    validate_idempotency_key(request.idempotency_key)
    reference = validate_text(request.reference, field="reference")
    for value, name in (
        (request.partner_points, "partnerPoints"),
        (request.operator_points, "operatorPoints"),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput("Points must be a whole number, zero or more", field=name)
    total = request.partner_points + request.operator_points
    if not 0 < total <= max_points:
        total = validate_points(total)  # raises, with its code and message
    if request.partner_points:
        _require_active_partner(partner)
    request_hash = request.request_hash or request_fingerprint(
        "points_earn",
        member=request.member_id,
        partner=getattr(partner, "pk", None),
        partner_points=request.partner_points,
        operator_points=request.operator_points,
        kind=request.kind,
        reference=reference,
        purchase_amount=request.purchase_amount,
        purchase_currency=request.purchase_currency,
    )
    return _Row(index, request, total, request_hash, reference)


def transactions_by_keys(*, caller: str, keys: list[str]) -> dict[str, tuple[str, int, int, int]]:
    """The transactions this caller wrote under any of these keys, in one query:
    key → (request hash, transaction id, member points, member id).

    On PostgreSQL every key is one probe of the (caller, key) unique index, whatever the
    planner's statistics say: with a plain `key IN (…)` and statistics older than a
    partner's first big import, the planner scans every key of that caller instead (25×
    slower at 55,000 rows, and growing with every chunk).
    """
    if not keys:
        return {}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT t.idempotency_key, t.request_hash, t.id, t.member_points, t.member_id "
                "FROM unnest(%s::text[]) AS k(key) CROSS JOIN LATERAL ("
                "  SELECT * FROM coalition_transaction"
                "   WHERE caller = %s AND idempotency_key = k.key LIMIT 1) t",
                [list(keys), caller],
            )
            found = cursor.fetchall()
    else:
        found = LedgerTransaction.objects.filter(
            caller=caller, idempotency_key__in=keys
        ).values_list("idempotency_key", "request_hash", "id", "member_points", "member_id")
    return {
        key: (request_hash, txn_id, points, member_id)
        for key, request_hash, txn_id, points, member_id in found
    }


def idempotency_records_by_keys(
    *, caller: str, keys: list[str]
) -> dict[str, tuple[str, str, int | None]]:
    """The records of non-ledger writes this caller made under any of these keys, in one
    query: key → (operation, request hash, result id). Index probes, as above."""
    if not keys:
        return {}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT r.idempotency_key, r.operation, r.request_hash, r.result_id "
                "FROM unnest(%s::text[]) AS k(key) CROSS JOIN LATERAL ("
                "  SELECT * FROM coalition_idempotency"
                "   WHERE caller = %s AND idempotency_key = k.key LIMIT 1) r",
                [list(keys), caller],
            )
            found = cursor.fetchall()
    else:
        found = IdempotencyRecord.objects.filter(
            caller=caller, idempotency_key__in=keys
        ).values_list("idempotency_key", "operation", "request_hash", "result_id")
    return {
        key: (operation, request_hash, result_id)
        for key, operation, request_hash, result_id in found
    }


def held_keys(*, caller: str, keys: list[str]) -> set[str]:
    """The keys among these that this caller already used for a hold, in one query (index
    probes, as above): a batch refuses those rows itself (a key is unique per caller across
    every kind of write), rather than let the database refuse the whole batch."""
    if not keys:
        return set()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT k.key FROM unnest(%s::text[]) AS k(key) "
                "WHERE (SELECT h.id FROM coalition_hold h "
                "        WHERE h.caller = %s AND h.idempotency_key = k.key) IS NOT NULL",
                [list(keys), caller],
            )
            return {key for (key,) in cursor.fetchall()}
    return set(
        RedemptionHold.objects.filter(caller=caller, idempotency_key__in=keys).values_list(
            "idempotency_key", flat=True
        )
    )


def _settle_used_keys(
    caller: str,
    rows: list[_Row],
    outcomes: list[BatchOutcome | None],
    *,
    other_writes: bool = True,
) -> list[_Row]:
    """Replay (or refuse) the rows whose key was used; the rows still to post. With
    `other_writes`, a key this caller used for another kind of write (a hold, a recorded
    write) is refused too (the look under the wallet locks leaves that to the database)."""
    keys = [row.request.idempotency_key for row in rows]
    used = transactions_by_keys(caller=caller, keys=keys)
    elsewhere: set[str] = set()
    if other_writes:
        missing = [key for key in keys if key not in used]
        elsewhere = held_keys(caller=caller, keys=missing) | set(
            idempotency_records_by_keys(caller=caller, keys=missing)
        )
    left = []
    for row in rows:
        hit = used.get(row.request.idempotency_key)
        if hit is None and row.request.idempotency_key in elsewhere:
            outcomes[row.index] = _conflict(row.index, row.request.member_id)
        elif hit is None:
            left.append(row)
        elif hit[0] != row.request_hash:
            outcomes[row.index] = _conflict(row.index, row.request.member_id)
        else:
            outcomes[row.index] = BatchOutcome(
                index=row.index,
                member_id=row.request.member_id,
                status=OutcomeStatus.REPLAYED,
                transaction_id=hit[1],
                points=hit[2],
            )
    return left


def wallets_lock_sorted(
    *, member_ids: list[int], skip_locked: bool = False
) -> dict[int, tuple[int, int, str]]:
    """Lock members' wallets in member-id order, in one statement.

    Returns member id → (wallet id, balance, member status). Only the wallet rows are locked
    (FOR UPDATE OF the account), never the members. With `skip_locked`, a wallet another
    transaction holds is left out instead of waited for (SKIP LOCKED): the caller sees which.
    """
    if not member_ids:
        return {}
    # The member's status by a probe per wallet (a correlated subquery on the primary key),
    # not a join: for a thousand wallets the planner chose a hash join over a scan of every
    # member (23 ms a chunk at 100,000 members, growing with them; the probes take ~4 ms).
    status = Member.objects.filter(pk=OuterRef("member_id")).values("status")
    wallets = (
        Account.objects.select_for_update(of=("self",), skip_locked=skip_locked)
        .filter(member_id__any=member_ids, kind=Account.Kind.MEMBER_WALLET)
        .order_by("member_id")
        .annotate(member_status=Subquery(status))
        .values_list("member_id", "id", "balance", "member_status")
    )
    return {
        member_id: (wallet_id, balance, status) for member_id, wallet_id, balance, status in wallets
    }


@ledger_write
def points_earn_batch(
    *,
    caller: str,
    partner: Any,
    requests: list[EarnRequest],
    now: datetime | None = None,
    locked_wallets: dict[int, tuple[int, int, str]] | None = None,
    validated: bool = False,
) -> list[BatchOutcome]:
    """Credit up to 1,000 earns at one partner in one database transaction.

    Each request is what `points_earn` does for one member (`partner_points` issued by the
    partner, `operator_points` from the operator's marketing account), with its own
    idempotency key. Returns one outcome per request, in order: posted, replayed or
    rejected with its contract code; a rejected row writes nothing, the others still post.

    `locked_wallets`: for a caller that, in its own transaction, already locked every
    member's wallet with `wallets_lock_sorted` (what it returned) and then looked the keys
    up under those locks; both steps are then not repeated here.

    `validated`: for a caller that built every request from input it has already checked
    as `points_earn` would (a str key and reference that pass `validate_text`, an int member
    id, points ints of zero or more, kind EARN or BONUS, its own request hash) and whose
    partner is active: only the points range is checked again. Any row that does not
    look so is checked in full.
    """
    if len(requests) > MAX_BATCH_SIZE:
        raise LimitExceeded(
            f"At most {MAX_BATCH_SIZE} earns may be posted in one batch", field="requests"
        )
    now = now or timezone.now()
    outcomes: list[BatchOutcome | None] = [None] * len(requests)

    # 1–2. Validate; the first valid row of a key wins within the batch.
    rows: list[_Row] = []
    first_of_key: dict[str, _Row] = {}
    duplicates: list[tuple[_Row, _Row]] = []
    max_points = _setting("MAX_POINTS_PER_TRANSACTION")
    trusted = validated and getattr(partner, "status", "active") == "active"
    for index, request in enumerate(requests):
        row = None
        if trusted:
            total = request.partner_points + request.operator_points
            if 0 < total <= max_points and request.request_hash:
                row = _Row(index, request, total, request.request_hash, request.reference)
        if row is None:
            try:
                row = _validate(index, request, partner, max_points)
            except CoalitionError as error:
                outcomes[index] = _rejected(index, getattr(request, "member_id", None), error)
                continue
        first = first_of_key.get(request.idempotency_key)
        if first is None:
            first_of_key[request.idempotency_key] = row
            rows.append(row)
        elif first.request_hash == row.request_hash:
            duplicates.append((row, first))
        else:
            outcomes[index] = _conflict(index, request.member_id)

    if locked_wallets is not None:
        if not connection.in_atomic_block:
            raise RuntimeError("locked_wallets is only meaningful inside the caller's transaction")
        wallets = locked_wallets
    else:
        # 3. Keys already used need no lock at all.
        rows = _settle_used_keys(caller, rows, outcomes)
        # 4. Lock the wallets in member-id order, then look again: a concurrent request
        # with one of our keys may have committed while we waited.
        wallets = wallets_lock_sorted(member_ids=sorted({row.request.member_id for row in rows}))
        if rows:
            rows = _settle_used_keys(caller, rows, outcomes, other_writes=False)

    # 5. Only active members earn.
    postable: list[_Row] = []
    for row in rows:
        wallet = wallets.get(row.request.member_id)
        if wallet is None:
            error: CoalitionError = NotFound("No such member", field="memberId")
            outcomes[row.index] = _rejected(row.index, row.request.member_id, error)
        elif wallet[2] != Member.Status.ACTIVE:
            error = MemberNotActive(f"Member {row.request.member_id} is {wallet[2]}")
            outcomes[row.index] = _rejected(row.index, row.request.member_id, error)
        else:
            postable.append(row)

    # 6. Write.
    if postable:
        _write(
            caller=caller,
            partner=partner,
            rows=postable,
            wallets=wallets,
            now=now,
            outcomes=outcomes,
        )
        _tier_upgrades(member_ids=sorted({row.request.member_id for row in postable}), now=now)

    for row, first in duplicates:
        outcomes[row.index] = _duplicate_of(row, outcomes[first.index])
    return outcomes  # type: ignore[return-value]


def _duplicate_of(row: _Row, first: BatchOutcome | None) -> BatchOutcome:
    """A repeated row within the batch: the first row's result, as a replay."""
    assert first is not None
    if first.status == OutcomeStatus.REJECTED:
        return BatchOutcome(
            index=row.index,
            member_id=row.request.member_id,
            status=OutcomeStatus.REJECTED,
            code=first.code,
            message=first.message,
            field=first.field,
        )
    return BatchOutcome(
        index=row.index,
        member_id=row.request.member_id,
        status=OutcomeStatus.REPLAYED,
        transaction_id=first.transaction_id,
        points=first.points,
    )


def _write(
    *,
    caller: str,
    partner: Any,
    rows: list[_Row],
    wallets: dict[int, tuple[int, int, str]],
    now: datetime,
    outcomes: list[BatchOutcome | None],
) -> None:
    issued_id = marketing_id = None
    if any(row.request.partner_points for row in rows):
        issued_id = system_account_id(Account.Kind.PARTNER_ISSUED, partner_id=partner.pk)
    if any(row.request.operator_points for row in rows):
        marketing_id = system_account_id(Account.Kind.OPERATOR_MARKETING)
    partner_id = getattr(partner, "pk", None)

    txn_ids = _insert(
        LedgerTransaction,
        TRANSACTION_COLUMNS,
        [
            (
                row.request.kind,
                row.request.member_id,
                partner_id,
                row.total,
                row.reference,
                caller,
                row.request.idempotency_key,
                row.request_hash,
                row.request.purchase_amount,
                row.request.purchase_currency,
                now,
                row.request.metadata or {},
            )
            for row in rows
        ],
        returning=True,
    )

    expires_at = lot_expiry(programme_get(), now)
    balances = {member_id: wallet[1] for member_id, wallet in wallets.items()}
    entries: list[tuple] = []
    lots: list[tuple] = []
    for row, txn_id in zip(rows, txn_ids, strict=True):
        request = row.request
        # The legs in the order `points_earn` writes them: issuer(s) first, the wallet last.
        if request.partner_points:
            entries.append((txn_id, issued_id, -request.partner_points))
        if request.operator_points:
            entries.append((txn_id, marketing_id, -request.operator_points))
        entries.append((txn_id, wallets[request.member_id][0], row.total))
        # As `_credit_lots`: a negative balance is repaid first; the rest goes into a lot.
        balance_before = balances[request.member_id]
        balances[request.member_id] = balance_before + row.total
        into_lots = row.total - min(row.total, max(-balance_before, 0))
        if into_lots > 0:
            lots.append((request.member_id, txn_id, row.total, into_lots, expires_at, now))
        outcomes[row.index] = BatchOutcome(
            index=row.index,
            member_id=request.member_id,
            status=OutcomeStatus.POSTED,
            transaction_id=txn_id,
            points=row.total,
            _transaction=functools.partial(_stored, row, txn_id, caller, partner_id, now),
        )
    _insert(Entry, ["transaction_id", "account_id", "points"], entries)
    _insert(
        PointLot,
        ["member_id", "transaction_id", "points", "remaining", "expires_at", "created_at"],
        lots,
    )
    moved = sorted({wallets[row.request.member_id][0] for row in rows})
    Account.objects.filter(id__any=moved).update(last_activity_at=now)


def _stored(row: _Row, txn_id: int, caller: str, partner_id, now: datetime) -> LedgerTransaction:
    """The transaction a row wrote, as a model instance (no query)."""
    txn = LedgerTransaction(
        pk=txn_id,
        kind=row.request.kind,
        member_id=row.request.member_id,
        partner_id=partner_id,
        member_points=row.total,
        reference=row.reference,
        caller=caller,
        idempotency_key=row.request.idempotency_key,
        request_hash=row.request_hash,
        purchase_amount=row.request.purchase_amount,
        purchase_currency=row.request.purchase_currency,
        created_at=now,
        metadata=row.request.metadata or {},
    )
    return as_stored(txn)  # a save() would UPDATE (and be refused)


TRANSACTION_COLUMNS = [
    "kind",
    "member_id",
    "partner_id",
    "member_points",
    "reference",
    "caller",
    "idempotency_key",
    "request_hash",
    "purchase_amount",
    "purchase_currency",
    "created_at",
    "metadata",
]


def _insert(model, attnames: list[str], rows: list[tuple], *, returning: bool = False) -> list:
    """Store `rows` (values for `attnames`; other columns get their defaults) in bulk.

    On PostgreSQL: one COPY (the ids reserved first from the table's sequence when
    `returning`), as Django's bulk_create spends more time preparing model instances than
    the database spends storing the rows, and COPY is the cheapest way in for the database
    too; the tables' triggers fire for every row as with INSERT. Elsewhere: bulk_create.
    Returns the new ids, in the rows' order, when `returning`.
    """
    if not rows:
        return []
    if connection.vendor != "postgresql":
        instances = [model(**dict(zip(attnames, row, strict=True))) for row in rows]
        model.objects.bulk_create(instances)
        return [instance.pk for instance in instances]
    fields = {field.attname: field for field in model._meta.concrete_fields}
    rest = [
        field
        for name, field in fields.items()
        if name not in attnames and not field.primary_key and not field.has_db_default()
    ]
    tail = "".join("\t" + _copy_text(field.get_default()) for field in rest) + "\n"
    quote = connection.ops.quote_name
    table = model._meta.db_table
    columns = [fields[name].column for name in attnames] + [field.column for field in rest]
    ids: list[int] = []
    with connection.cursor() as cursor, connection.wrap_database_errors:
        if returning:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                [table, model._meta.pk.column, len(rows)],
            )
            ids = sorted(row[0] for row in cursor.fetchall())
            columns.insert(0, model._meta.pk.column)
        # Column by column: a column of plain ints, of plain strings, or of one value in every
        # row (the batch's moment, its caller) is turned into text without a call per value.
        texts = [_copy_column(list(values)) for values in zip(*rows, strict=True)]
        if returning:
            texts.insert(0, list(map(str, ids)))
        text = tail.join(map("\t".join, zip(*texts, strict=True))) + tail
        # Encoded once (Django's connections are UTF-8), and read in one piece.
        data = text.encode()
        # Identifiers from the model's own metadata, quoted; the values travel as data.
        statement = f"COPY {quote(table)} ({', '.join(map(quote, columns))}) FROM STDIN"
        cursor.cursor.copy_expert(statement, io.BytesIO(data), size=max(len(data), 8192))
    return ids


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _json_dumps(value) -> str:
    """`json.dumps(value, ensure_ascii=False)`, with one encoder for every call."""
    return _JSON_ENCODER.encode(value)


def _copy_text(value: Any) -> str:
    """One value in COPY's text format (\\N is NULL; backslash, tab and line breaks escaped)."""
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is str:
        if value.isprintable() and "\\" not in value:
            return value  # nothing to escape (the usual case)
        return value.translate(_COPY_ESCAPES)
    if value is None:
        return "\\N"
    if kind is bool:
        return "t" if value else "f"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        # JSON escapes control characters itself: only its own backslashes need doubling.
        text = _json_dumps(value)
        return text.replace("\\", "\\\\") if "\\" in text else text
    return str(value).translate(_COPY_ESCAPES)


def _copy_column(values: list) -> list[str]:
    """`_copy_text` of every value of one column (at least one), in fewer calls."""
    first = values[0]
    if all(map(operator.is_, values, itertools.repeat(first))):
        return [_copy_text(first)] * len(values)
    kinds = set(map(type, values))
    if kinds == {int} or kinds == {Decimal}:
        return list(map(str, values))
    if kinds == {str}:
        return [
            value if value.isprintable() and "\\" not in value else value.translate(_COPY_ESCAPES)
            for value in values
        ]
    return list(map(_copy_text, values))


# --------------------------------------------------------------------------- tiers


def qualifying_points_by_member(*, member_ids: list[int], now: datetime) -> dict[int, int]:
    """`qualifying_points` for many members in one query (members with none are absent)."""
    if not member_ids:
        return {}
    earned = (
        LedgerTransaction.objects.filter(member_id__any=member_ids)
        .filter(qualifying(now))
        .order_by()
        .values("member_id")
        .annotate(total=Sum("member_points"))
        .values_list("member_id", "total")
    )
    return {member_id: total or 0 for member_id, total in earned}


def member_tiers_by_member(*, member_ids: list[int]) -> dict[int, MemberTier]:
    """Members' recorded tier states (with their tier), in one query."""
    if not member_ids:
        return {}
    states = MemberTier.objects.select_related("tier").filter(member_id__any=member_ids)
    return {state.member_id: state for state in states}


def _tier_upgrades(*, member_ids: list[int], now: datetime) -> None:
    """`member_tier_upgrade` for every member of the batch, set-based."""
    tiers = tiers_ordered()
    if len(tiers) < 2:
        return
    states = member_tiers_by_member(member_ids=member_ids)
    top = tiers[-1]
    # A member at the top tier with no grace period running has nothing to check.
    candidates = [
        member_id
        for member_id in member_ids
        if member_id not in states
        or states[member_id].tier_id != top.pk
        or states[member_id].below_since is not None
    ]
    points_by_member = qualifying_points_by_member(member_ids=candidates, now=now)
    clear_grace: list[int] = []
    upgrades: list[tuple[int, Any]] = []
    for member_id in candidates:
        points = points_by_member.get(member_id, 0)
        reached = tier_for_points(tiers, points)
        state = states.get(member_id)
        current = state.tier if state else tiers[0]
        if reached is None or reached.qualifying_points <= current.qualifying_points:
            if state and state.below_since and points >= current.qualifying_points:
                clear_grace.append(member_id)
            continue
        upgrades.append((member_id, reached))
    if clear_grace:
        MemberTier.objects.filter(member_id__any=list(clear_grace)).update(below_since=None)
    if upgrades:
        members = Member.objects.in_bulk([member_id for member_id, _ in upgrades])
        for member_id, reached in upgrades:
            state = states.get(member_id)
            current = state.tier if state else tiers[0]
            _change(
                members[member_id],
                state,
                reached,
                points_by_member.get(member_id, 0),
                "earn",
                now,
                from_tier=current,
            )

"""Validation, accounts, lots and the one function that writes a balanced transaction."""

import calendar
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.db import IntegrityError, connection, transaction
from django.db.models import F

from ..errors import (
    InsufficientPoints,
    InvalidInput,
    InvalidState,
    LimitExceeded,
    MemberNotActive,
)
from ..models import (
    Account,
    Entry,
    LedgerTransaction,
    Member,
    PointLot,
    Programme,
    RedemptionHold,
)
from ..prepared import Prepared
from .idempotency import _setting

Kind = LedgerTransaction.Kind
MAX_TEXT_LENGTH = 255

T = TypeVar("T")


# --------------------------------------------------------------------------- validation


def validate_points(points: Any, *, field: str = "points") -> int:
    """Points are whole, positive and within the per-transaction maximum."""
    if isinstance(points, bool) or not isinstance(points, int):
        raise InvalidInput("Points must be a whole number", field=field)
    if points <= 0:
        raise InvalidInput("Points must be greater than zero", field=field)
    maximum = _setting("MAX_POINTS_PER_TRANSACTION")
    if points > maximum:
        raise LimitExceeded(f"At most {maximum} points may move in one transaction", field=field)
    return points


def validate_text(value: Any, *, field: str, required: bool = False) -> str:
    """A short caller-supplied string: at most 255 characters, no NUL."""
    if (
        type(value) is str
        and len(value) <= MAX_TEXT_LENGTH
        and "\x00" not in value
        and not (required and (not value or value.isspace()))
    ):
        return value  # the usual case: every check below passes
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput("Must be a string", field=field)
    if required and not value.strip():
        raise InvalidInput("Must not be empty", field=field)
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidInput(f"At most {MAX_TEXT_LENGTH} characters", field=field)
    if "\x00" in value:
        raise InvalidInput("Must not contain NUL characters", field=field)
    return value


def validate_idempotency_key(key: Any) -> str:
    return validate_text(key, field="idempotencyKey", required=True)


def _require_active_member(member: Member) -> None:
    if member.status != Member.Status.ACTIVE:
        raise MemberNotActive(f"Member {member.member_number} is {member.status}")


def _require_active_partner(partner: Any) -> None:
    if partner is None:
        raise InvalidInput("A partner is required", field="partner")
    if getattr(partner, "status", "active") != "active":
        raise InvalidState(f"Partner {partner.code} is suspended")


# --------------------------------------------------------------------------- accounts


# Per-process caches of rows every posting reads. Accounts are never deleted, so an account
# id, once known, stays right; the programme is re-read after CACHE_SECONDS (and at once in
# the process that saves it). Tests clear them between cases (caches_clear).
CACHE_SECONDS = 10.0
_programme_cache: list = []  # [(read at, Programme)]
_account_ids: dict[tuple[str, int | None, int | None], int] = {}


def caches_clear() -> None:
    """Forget cached programme rows and account ids (after a save, or between tests)."""
    _programme_cache.clear()
    _account_ids.clear()
    from .tiers import tiers_cache_clear

    tiers_cache_clear()


def programme_get() -> Programme:
    """The programme (created with its defaults on first use), cached for a few seconds."""
    if _programme_cache and time.monotonic() - _programme_cache[0][0] < CACHE_SECONDS:
        return _programme_cache[0][1]
    programme = Programme.objects.order_by("id").first()
    if programme is None:
        programme, _ = Programme.objects.get_or_create(id=1)
    _programme_cache[:] = [(time.monotonic(), programme)]
    return programme


def system_account_id(
    kind: str,
    *,
    partner_id: int | None = None,
    charity_id: int | None = None,
    on_create: Callable[[], None] | None = None,
) -> int:
    """The id of a partner, charity or programme account, created on first use (then
    `on_create()` is called, in the creating transaction).

    These accounts are never locked or updated by postings: their balance is an aggregate.
    """
    cache_key = (kind, partner_id, charity_id)
    if cache_key in _account_ids:
        return _account_ids[cache_key]
    lookup = {"kind": kind, "partner_id": partner_id, "charity_id": charity_id}
    account_id = Account.objects.filter(**lookup).values_list("id", flat=True).first()
    if account_id is None:
        try:
            with transaction.atomic():
                account_id = Account.objects.create(**lookup).id
            if on_create is not None:
                on_create()
        except IntegrityError:
            # Created concurrently by another posting; it is committed now.
            account_id = Account.objects.filter(**lookup).values_list("id", flat=True).get()
    # Remember it only once this transaction commits: a row seen (or made) inside a
    # transaction that rolls back must not be remembered.
    transaction.on_commit(lambda: _account_ids.__setitem__(cache_key, account_id))
    return account_id


def as_stored(instance: T) -> T:
    """Mark a model instance built from values just written by SQL as the stored row it is
    (no query): a later save() updates it rather than inserting it again."""
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


_TOUCH_SQL = (
    "UPDATE coalition_account SET last_activity_at = %s WHERE member_id = %s "
    "RETURNING id, kind, member_id, balance, held, last_activity_at"
)


def _lock_wallet(member: Member, *, touch: datetime | None = None) -> Account:
    """Lock the member's wallet row for this transaction. With `touch`, record the
    member's activity in the same statement (one round trip instead of two)."""
    if touch is None:
        return Account.objects.select_for_update().get(member_id=member.pk)
    with connection.cursor() as cursor:
        # Adapted as the ORM would (SQLite keeps datetimes as naive UTC text).
        cursor.execute(_TOUCH_SQL, [connection.ops.adapt_datetimefield_value(touch), member.pk])
        row = cursor.fetchone()
    if row is None:
        raise Account.DoesNotExist(f"member {member.pk} has no wallet")
    account_id, kind, member_id, balance, held, _ = row
    return as_stored(
        Account(
            id=account_id,
            kind=kind,
            member_id=member_id,
            balance=balance,
            held=held,
            last_activity_at=touch,
        )
    )


_REPLAY_OR_TOUCH_SQL = """
WITH prior AS (
    SELECT id FROM coalition_transaction
     WHERE caller = %(caller)s AND idempotency_key = %(key)s AND %(key)s IS NOT NULL
), wallet AS (
    UPDATE coalition_account SET last_activity_at = %(now)s
     WHERE member_id = %(member)s AND NOT EXISTS (SELECT 1 FROM prior)
    RETURNING id, kind, member_id, balance, held
)
SELECT (SELECT id FROM prior), wallet.id, wallet.kind, wallet.member_id, wallet.balance,
       wallet.held
  FROM (SELECT 1) AS one LEFT JOIN wallet ON true
"""
REPLAY_OR_TOUCH = Prepared(
    "coalition_replay_or_touch",
    _REPLAY_OR_TOUCH_SQL,
    {"caller": "text", "key": "text", "now": "timestamptz", "member": "bigint"},
)


def _lock_wallet_unless_replay(
    member: Member, *, touch: datetime, caller: str, idempotency_key: str | None
) -> tuple[Account | None, bool]:
    """(the member's wallet, locked with the activity recorded, False) — or (None, True) when
    this caller already wrote a transaction under the key (nothing is locked or touched then;
    the caller replays it). On PostgreSQL one statement, elsewhere two."""
    if connection.vendor != "postgresql":
        if idempotency_key is not None and (
            LedgerTransaction.objects.filter(caller=caller, idempotency_key=idempotency_key)
            .values("id")
            .exists()
        ):
            return None, True
        return _lock_wallet(member, touch=touch), False
    params = {"caller": caller, "key": idempotency_key, "now": touch, "member": member.pk}
    with connection.cursor() as cursor:
        REPLAY_OR_TOUCH.execute(cursor, params)
        prior_id, *row = cursor.fetchone()
    if prior_id is not None:
        return None, True
    account_id, kind, member_id, balance, held = row
    if account_id is None:
        raise Account.DoesNotExist(f"member {member.pk} has no wallet")
    wallet = Account(
        id=account_id,
        kind=kind,
        member_id=member_id,
        balance=balance,
        held=held,
        last_activity_at=touch,
    )
    return as_stored(wallet), False


def _lock_wallets(member_ids: Iterable[int]) -> dict[int, Account]:
    """Lock several wallets in member-id order, so concurrent writers never deadlock."""
    wallets = Account.objects.select_for_update().filter(member_id__in=set(member_ids))
    return {wallet.member_id: wallet for wallet in wallets.order_by("member_id")}


def wallets_lock(*, member_ids: Iterable[int]) -> dict[int, Account]:
    """Lock members' wallets (in member-id order) for a write spanning several services."""
    return _lock_wallets(member_ids)


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` later, clamped to the end of a shorter month."""
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    month = month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def lot_expiry(programme: Programme, earned_at: datetime) -> datetime | None:
    """When points earned now expire under a fixed lifetime (None: they don't, by date)."""
    if programme.expiry_policy != Programme.ExpiryPolicy.FIXED:
        return None
    expires_at = add_months(earned_at, programme.expiry_months)
    if programme.expire_at_month_end:
        start_of_month = expires_at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        expires_at = add_months(start_of_month, 1)
    return expires_at


# --------------------------------------------------------------------------- posting


@dataclass(frozen=True)
class Leg:
    account_id: int
    points: int


def _post(
    *,
    kind: str,
    legs: list[Leg],
    caller: str,
    idempotency_key: str | None,
    request_hash: str,
    created_at: datetime,
    member_id: int | None = None,
    wallet: Account | None = None,
    partner: Any = None,
    charity: Any = None,
    reference: str = "",
    purchase_amount: Any = None,
    purchase_currency: str = "",
    reversal_of: LedgerTransaction | None = None,
    hold: RedemptionHold | None = None,
    metadata: dict | None = None,
) -> LedgerTransaction:
    """Write one balanced transaction and its entries."""
    legs = [leg for leg in legs if leg.points != 0]
    if sum(leg.points for leg in legs) != 0 or len(legs) < 2:
        raise AssertionError(f"unbalanced {kind} posting: {legs}")  # a programming error
    member_points = sum(leg.points for leg in legs if wallet and leg.account_id == wallet.pk)
    txn = LedgerTransaction.objects.create(
        kind=kind,
        member_id=member_id,
        partner=partner,
        charity=charity,
        member_points=member_points,
        reference=reference,
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        purchase_amount=purchase_amount,
        purchase_currency=purchase_currency,
        reversal_of=reversal_of,
        hold=hold,
        created_at=created_at,
        metadata=metadata or {},
    )
    Entry.objects.bulk_create(
        [Entry(transaction=txn, account_id=leg.account_id, points=leg.points) for leg in legs]
    )
    if wallet is not None:
        wallet.balance += member_points  # the database trigger did the same to the row
    return txn


def _consume_lots(
    wallet: Account,
    points: int,
    *,
    lot_ids: list[int] | None = None,
    prefer_lot_ids: list[int] | None = None,
) -> list[list[int]]:
    """Take `points` from the wallet's lots, earliest-expiring first.

    `lot_ids` limits the lots to those; `prefer_lot_ids` are taken before all others. Only
    the positive part of the balance lives in lots, so a debit that takes the wallet
    negative (a reversal) consumes what there is. Returns [[lot id, points taken], ...].
    """
    to_take = min(points, max(wallet.balance, 0))
    taken: list[list[int]] = []
    lots = PointLot.objects.filter(member_id=wallet.member_id, remaining__gt=0)
    if lot_ids is not None:
        lots = lots.filter(id__in=lot_ids)
    groups = [lots]
    if prefer_lot_ids:
        groups = [lots.filter(id__in=prefer_lot_ids), lots.exclude(id__in=prefer_lot_ids)]
    earliest_first = (F("expires_at").asc(nulls_last=True), "id")
    for group in groups:
        seen: list[int] = []
        while to_take > 0:
            # Plain paged reads (no server-side cursor): most spends touch one or two lots.
            page = list(
                group.exclude(id__in=seen)
                .order_by(*earliest_first)
                .values_list("id", "remaining")[:32]
            )
            if not page:
                break
            for lot_id, remaining in page:
                seen.append(lot_id)
                if to_take == 0:
                    break
                take = min(remaining, to_take)
                PointLot.objects.filter(pk=lot_id).update(remaining=remaining - take)
                taken.append([lot_id, take])
                to_take -= take
    return taken


def _credit_lots(
    wallet: Account,
    points: int,
    *,
    balance_before: int,
    txn: LedgerTransaction | None = None,
    expires_at: datetime | None = None,
    restore: list[list[int]] | None = None,
) -> list[list[int]]:
    """Put credited points into lots, after repaying a negative balance.

    `restore` gives the lots a burn consumed, [[lot id, points]]: a reversed burn gives the
    points back to them, latest-expiring first, so they keep their original expiry.
    """
    into_lots = points - min(points, max(-balance_before, 0))
    if into_lots <= 0:
        return []
    if restore is None:
        PointLot.objects.create(
            member_id=wallet.member_id,
            transaction=txn,
            points=points,
            remaining=into_lots,
            expires_at=expires_at,
            created_at=txn.created_at,
        )
        return []
    restored: list[list[int]] = []
    for lot_id, quota in reversed(restore):
        if into_lots == 0:
            break
        give = min(quota, into_lots)
        lot = PointLot.objects.get(pk=lot_id)
        PointLot.objects.filter(pk=lot_id).update(remaining=lot.remaining + give)
        restored.append([lot_id, give])
        into_lots -= give
    if into_lots:
        raise AssertionError("reversal restores more points than the burn consumed")
    return restored


def _mark_activity(wallet: Account, now: datetime) -> None:
    Account.objects.filter(pk=wallet.pk).update(last_activity_at=now)
    wallet.last_activity_at = now


def _release_due_holds(wallet: Account, now: datetime) -> None:
    """Expire this member's holds that are past due, so their points are spendable again."""
    if wallet.held == 0:
        return  # nothing reserved, so nothing to release
    due = list(
        RedemptionHold.objects.filter(
            member_id=wallet.member_id, status=RedemptionHold.Status.ACTIVE, expires_at__lte=now
        )
    )
    if not due:
        return
    for hold in due:
        hold.status = RedemptionHold.Status.EXPIRED
        hold.resolved_at = now
        hold.save(update_fields=["status", "resolved_at"])
    _set_held(wallet, wallet.held - sum(hold.points for hold in due))


def _set_held(wallet: Account, held: int) -> None:
    Account.objects.filter(pk=wallet.pk).update(held=held)
    wallet.held = held


def _require_spendable(wallet: Account, points: int, *, field: str = "points") -> None:
    if wallet.balance < 0:
        raise InsufficientPoints(
            "The member's balance is negative after a reversal; nothing can be spent until "
            "it is repaid",
            field=field,
        )
    spendable = wallet.balance - wallet.held
    if points > spendable:
        raise InsufficientPoints(
            f"The member has {max(spendable, 0)} spendable points; {points} were asked for",
            field=field,
        )


# --------------------------------------------------------------------------- one-statement credit

# PostgreSQL only: a credit to one member's wallet (an earn or bonus) written by one statement.
# Data-modifying CTEs lock the wallet (recording activity), write the transaction, its legs and
# the lot at once, so a credit costs BEGIN, this statement and COMMIT: three round trips instead
# of seven, and no ORM objects built for rows the caller never reads back. The database's ledger
# triggers fire as for any other INSERT (the statement-level ones once, at its end). The
# idempotency key is checked in the same statement: `prior` finds a committed earlier request
# under the key (the wallet is then not touched, nothing is written), and ON CONFLICT catches a
# concurrent one that committed while this statement waited for the wallet lock.
_CREDIT_SQL = """
WITH prior AS (
    SELECT id FROM coalition_transaction
     WHERE caller = %(caller)s AND idempotency_key = %(key)s AND %(key)s IS NOT NULL
), wallet AS (
    UPDATE coalition_account SET last_activity_at = %(now)s
     WHERE member_id = %(member)s AND NOT EXISTS (SELECT 1 FROM prior)
    RETURNING id, balance
), txn AS (
    INSERT INTO coalition_transaction
        (kind, member_id, partner_id, charity_id, member_points, reference, caller,
         idempotency_key, request_hash, purchase_amount, purchase_currency, reversal_of_id,
         hold_id, created_at, metadata)
    SELECT %(kind)s, %(member)s, %(partner)s, NULL, %(points)s, %(reference)s, %(caller)s,
           %(key)s, %(hash)s, %(amount)s, %(currency)s, NULL, NULL, %(now)s, %(metadata)s::jsonb
      FROM wallet
    ON CONFLICT (caller, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
), legs AS (
    INSERT INTO coalition_entry (transaction_id, account_id, points)
    SELECT txn.id, leg.account_id, leg.points
      FROM txn
     CROSS JOIN (
            SELECT unnest(%(leg_accounts)s::bigint[]) AS account_id,
                   unnest(%(leg_points)s::bigint[]) AS points
            UNION ALL
            SELECT wallet.id, %(points)s FROM wallet
           ) AS leg
), lot AS (
    -- As _credit_lots: a negative balance is repaid first; the rest goes into a new lot.
    INSERT INTO coalition_lot (member_id, transaction_id, points, remaining, expires_at, created_at)
    SELECT %(member)s, txn.id, %(points)s,
           %(points)s - least(%(points)s, greatest(-wallet.balance, 0)), %(expires)s, %(now)s
      FROM txn CROSS JOIN wallet
     WHERE %(points)s - least(%(points)s, greatest(-wallet.balance, 0)) > 0
)
SELECT (SELECT id FROM prior), (SELECT id FROM txn), (SELECT id FROM wallet),
       (SELECT balance FROM wallet)
"""
CREDIT = Prepared(
    "coalition_credit",
    _CREDIT_SQL,
    {
        "caller": "text",
        "key": "text",
        "now": "timestamptz",
        "member": "bigint",
        "kind": "text",
        "partner": "bigint",
        "points": "bigint",
        "reference": "text",
        "hash": "text",
        "amount": "numeric",
        "currency": "text",
        "metadata": "text",
        "leg_accounts": "bigint[]",
        "leg_points": "bigint[]",
        "expires": "timestamptz",
    },
)


def credit_in_one_statement() -> bool:
    """Does this database write credits and spends in one statement each (_post_credit,
    _post_spend: PostgreSQL), or row by row through the ORM (_post, the lots helpers)?"""
    return connection.vendor == "postgresql"


def _post_credit(
    *,
    kind: str,
    member: Member,
    points: int,
    issuer_legs: list[Leg],
    caller: str,
    idempotency_key: str | None,
    request_hash: str,
    now: datetime,
    partner: Any = None,
    reference: str = "",
    purchase_amount: Any = None,
    purchase_currency: str = "",
    metadata: dict | None = None,
    expires_at: datetime | None = None,
) -> tuple[LedgerTransaction | None, int | None]:
    """Credit `points` to the member's wallet against `issuer_legs` in one statement.

    Returns (the new transaction, None), or (None, id of the transaction an earlier request
    wrote under this key) for the caller to replay; (None, None) when a concurrent request
    with the key won the race (the caller replays it too, now that it has committed).
    """
    if sum(leg.points for leg in issuer_legs) != -points or not issuer_legs:
        raise AssertionError(f"unbalanced {kind} credit: {issuer_legs} for {points}")
    metadata = metadata or {}
    params = {
        "caller": caller,
        "key": idempotency_key,
        "now": now,
        "member": member.pk,
        "kind": kind,
        "partner": getattr(partner, "pk", None),
        "points": points,
        "reference": reference,
        "hash": request_hash,
        "amount": purchase_amount,
        "currency": purchase_currency,
        "metadata": json.dumps(metadata),  # as JSONField stores it (no encoder)
        "leg_accounts": [leg.account_id for leg in issuer_legs],
        "leg_points": [leg.points for leg in issuer_legs],
        "expires": expires_at,
    }
    with connection.cursor() as cursor:
        CREDIT.execute(cursor, params)
        prior_id, txn_id, wallet_id, _balance_before = cursor.fetchone()
    if prior_id is not None:
        return None, prior_id
    if wallet_id is None:
        raise Account.DoesNotExist(f"member {member.pk} has no wallet")
    if txn_id is None:
        return None, None
    txn = LedgerTransaction(
        id=txn_id,
        kind=kind,
        member_id=member.pk,
        partner=partner,
        member_points=points,
        reference=reference,
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        purchase_amount=purchase_amount,
        purchase_currency=purchase_currency,
        created_at=now,
        metadata=metadata,
    )
    return as_stored(txn), None


# PostgreSQL only: a spend from a locked wallet in one statement. The lots are consumed
# earliest-expiring first (a running sum over the member's open lots in that order decides
# what each gives), the transaction records what it took in metadata.lots, exactly as
# _consume_lots + _post write it, and the two legs follow. The caller holds the wallet lock and
# has checked that the points are spendable; the database's spend guard checks again.
_SPEND_SQL = """
WITH open AS (
    -- Every open lot holds at least one point, so the first `to_take` lots in expiry order
    -- always suffice: read no more of them (lot_member_open serves them in that order).
    SELECT id, remaining, expires_at,
           sum(remaining) OVER (ORDER BY expires_at ASC NULLS LAST, id) AS upto
      FROM (SELECT id, remaining, expires_at FROM coalition_lot
             WHERE member_id = %(member)s AND remaining > 0
             ORDER BY expires_at ASC NULLS LAST, id
             LIMIT %(to_take)s) AS first_lots
), take AS (
    SELECT id, expires_at, least(remaining, %(to_take)s - (upto - remaining)) AS points
      FROM open
     WHERE upto - remaining < %(to_take)s
), taken AS (
    UPDATE coalition_lot AS lot SET remaining = lot.remaining - take.points
      FROM take
     WHERE lot.id = take.id
    RETURNING lot.id, take.points, take.expires_at
), consumed AS (
    SELECT coalesce(
               jsonb_agg(jsonb_build_array(id, points) ORDER BY expires_at ASC NULLS LAST, id),
               '[]'::jsonb
           ) AS lots
      FROM taken
), txn AS (
    INSERT INTO coalition_transaction
        (kind, member_id, partner_id, charity_id, member_points, reference, caller,
         idempotency_key, request_hash, purchase_amount, purchase_currency, reversal_of_id,
         hold_id, created_at, metadata)
    SELECT %(kind)s, %(member)s, %(partner)s, %(charity)s, -%(points)s, %(reference)s,
           %(caller)s, %(key)s, %(hash)s, NULL, '', NULL, NULL, %(now)s,
           %(metadata)s::jsonb || jsonb_build_object('lots', consumed.lots)
      FROM consumed
    RETURNING id
), legs AS (
    INSERT INTO coalition_entry (transaction_id, account_id, points)
    SELECT txn.id, leg.account_id, leg.points
      FROM txn
     CROSS JOIN (VALUES (%(wallet)s::bigint, -%(points)s::bigint),
                        (%(counter)s::bigint, %(points)s::bigint)) AS leg (account_id, points)
)
SELECT txn.id, consumed.lots::text FROM txn CROSS JOIN consumed
"""
SPEND = Prepared(
    "coalition_spend",
    _SPEND_SQL,
    {
        "member": "bigint",
        "to_take": "bigint",
        "kind": "text",
        "partner": "bigint",
        "charity": "bigint",
        "points": "bigint",
        "reference": "text",
        "caller": "text",
        "key": "text",
        "hash": "text",
        "now": "timestamptz",
        "metadata": "text",
        "wallet": "bigint",
        "counter": "bigint",
    },
)


def _post_spend(
    *,
    kind: str,
    wallet: Account,
    points: int,
    counter_account: int,
    caller: str,
    idempotency_key: str | None,
    request_hash: str,
    now: datetime,
    partner: Any = None,
    charity: Any = None,
    reference: str = "",
    metadata: dict | None = None,
) -> LedgerTransaction:
    """Take `points` from the locked `wallet` into `counter_account`: lots, transaction and
    legs in one statement (PostgreSQL)."""
    params = {
        "member": wallet.member_id,
        "to_take": min(points, max(wallet.balance, 0)),
        "kind": kind,
        "partner": getattr(partner, "pk", None),
        "charity": getattr(charity, "pk", None),
        "points": points,
        "reference": reference,
        "caller": caller,
        "key": idempotency_key,
        "hash": request_hash,
        "now": now,
        "metadata": json.dumps(metadata or {}),  # as JSONField stores it (no encoder)
        "wallet": wallet.pk,
        "counter": counter_account,
    }
    with connection.cursor() as cursor:
        SPEND.execute(cursor, params)
        txn_id, lots = cursor.fetchone()
    wallet.balance -= points  # the database trigger did the same to the row
    txn = LedgerTransaction(
        id=txn_id,
        kind=kind,
        member_id=wallet.member_id,
        partner=partner,
        charity=charity,
        member_points=-points,
        reference=reference,
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        metadata={**(metadata or {}), "lots": json.loads(lots)},
    )
    return as_stored(txn)

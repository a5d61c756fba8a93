"""Writes to the programme and its points ledger.

Every service here validates its input, locks only the member wallets it moves (in member-id
order), writes one balanced transaction, and raises a `CoalitionError` with a contract code
when a rule refuses the request, in which case nothing is written.

Wallet balances are maintained by the database from the entries themselves (a trigger, see
coalition/sql/); the services maintain `held` (points reserved by holds), lots and activity.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Sum
from django.utils import timezone

from .errors import (
    AlreadyReversed,
    HoldNotActive,
    IdempotencyConflict,
    InsufficientPoints,
    InvalidInput,
    InvalidState,
    LimitExceeded,
    MemberNotActive,
)
from .models import (
    Account,
    AdjustmentNote,
    Entry,
    IdempotencyRecord,
    LedgerTransaction,
    Member,
    PointLot,
    Programme,
    RedemptionHold,
)

logger = logging.getLogger(__name__)

Kind = LedgerTransaction.Kind
MAX_TEXT_LENGTH = 255
# PostgreSQL: serialization failure, deadlock detected, lock not available.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
IDEMPOTENCY_CONSTRAINTS = frozenset(
    {"transaction_idempotency_unique", "hold_idempotency_unique", "idempotency_record_unique"}
)

T = TypeVar("T")


# --------------------------------------------------------------------------- plumbing


def _setting(name: str) -> Any:
    return settings.COALITION[name]


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc.__cause__, "pgcode", None)


def _is_idempotency_race(exc: IntegrityError) -> bool:
    diag = getattr(exc.__cause__, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    if constraint:
        return constraint in IDEMPOTENCY_CONSTRAINTS
    # SQLite names the columns, not the constraint.
    return "idempotency_key" in str(exc)


def ledger_write(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a write in its own database transaction, retrying what is safe to retry.

    A deadlock, serialization failure or lock timeout is retried with jittered backoff. A
    unique-key violation on an idempotency key means a concurrent request with the same key
    committed first: one retry then finds and replays (or refuses) that first result.
    Called inside an outer transaction, the write runs in a savepoint and is not retried:
    the outer transaction is the caller's to retry.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        if connection.in_atomic_block:
            with transaction.atomic():
                return fn(*args, **kwargs)
        retries = _setting("WRITE_RETRIES")
        idempotency_retried = False
        attempt = 0
        while True:
            try:
                with transaction.atomic():
                    return fn(*args, **kwargs)
            except OperationalError as exc:
                if attempt >= retries or _sqlstate(exc) not in RETRYABLE_SQLSTATES:
                    raise
                logger.info("retrying %s after %s", fn.__name__, _sqlstate(exc))
            except IntegrityError as exc:
                if idempotency_retried or not _is_idempotency_race(exc):
                    raise
                idempotency_retried = True
            attempt += 1
            time.sleep(random.uniform(0, min(0.25, 0.005 * 2**attempt)))

    return wrapper


def request_fingerprint(operation: str, **payload: Any) -> str:
    """A stable hash of what the caller asked for, to tell a retry from a different request."""
    body = json.dumps(
        {"operation": operation, **payload}, sort_keys=True, default=str, separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()


def transaction_replay(
    *, caller: str, idempotency_key: str | None, request_hash: str
) -> LedgerTransaction | None:
    """The transaction this caller already wrote under this key, if any.

    Raises IdempotencyConflict when the key was used for a different request.
    """
    if idempotency_key is None:
        return None
    existing = LedgerTransaction.objects.filter(
        caller=caller, idempotency_key=idempotency_key
    ).first()
    if existing is None:
        return None
    if existing.request_hash != request_hash:
        raise IdempotencyConflict(
            "This idempotency key was already used for a different request",
            field="idempotencyKey",
        )
    existing.replayed = True
    return existing


def idempotency_replay(
    *, caller: str, idempotency_key: str, operation: str, request_hash: str
) -> IdempotencyRecord | None:
    """The record of a non-ledger write this caller already made under this key, if any."""
    record = IdempotencyRecord.objects.filter(
        caller=caller, idempotency_key=idempotency_key
    ).first()
    if record is None:
        return None
    if record.operation != operation or record.request_hash != request_hash:
        raise IdempotencyConflict(
            "This idempotency key was already used for a different request",
            field="idempotencyKey",
        )
    return record


def idempotency_record(
    *, caller: str, idempotency_key: str, operation: str, request_hash: str, result_id: int | None
) -> IdempotencyRecord:
    """Remember the result of a non-ledger write (in the same database transaction)."""
    return IdempotencyRecord.objects.create(
        caller=caller,
        idempotency_key=idempotency_key,
        operation=operation,
        request_hash=request_hash,
        result_id=result_id,
    )


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


def programme_get() -> Programme:
    """The programme (created with its defaults on first use)."""
    programme = Programme.objects.order_by("id").first()
    if programme is None:
        programme, _ = Programme.objects.get_or_create(id=1)
    return programme


def system_account_id(
    kind: str, *, partner_id: int | None = None, charity_id: int | None = None
) -> int:
    """The id of a partner, charity or programme account, created on first use.

    These accounts are never locked or updated by postings: their balance is an aggregate.
    """
    lookup = {"kind": kind, "partner_id": partner_id, "charity_id": charity_id}
    account_id = Account.objects.filter(**lookup).values_list("id", flat=True).first()
    if account_id is not None:
        return account_id
    try:
        with transaction.atomic():
            return Account.objects.create(**lookup).id
    except IntegrityError:
        # Created concurrently by another posting; it is committed now.
        return Account.objects.filter(**lookup).values_list("id", flat=True).get()


def _lock_wallet(member: Member) -> Account:
    return Account.objects.select_for_update().get(member_id=member.pk)


def _lock_wallets(member_ids: Iterable[int]) -> dict[int, Account]:
    """Lock several wallets in member-id order, so concurrent writers never deadlock."""
    wallets = Account.objects.select_for_update().filter(member_id__in=set(member_ids))
    return {wallet.member_id: wallet for wallet in wallets.order_by("member_id")}


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
    for group in groups:
        for lot in group.order_by("expires_at", "id").only("id", "remaining").iterator(64):
            if to_take == 0:
                return taken
            take = min(lot.remaining, to_take)
            PointLot.objects.filter(pk=lot.pk).update(remaining=lot.remaining - take)
            taken.append([lot.pk, take])
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


# --------------------------------------------------------------------------- members


def luhn_check_digit(digits: str) -> str:
    """The Luhn check digit that makes `digits + check` valid."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isdigit() and luhn_check_digit(number[:-1]) == number[-1]


def _new_member_number() -> str:
    prefix = _setting("MEMBER_NUMBER_PREFIX")
    body = prefix + "".join(secrets.choice("0123456789") for _ in range(15 - len(prefix)))
    return body + luhn_check_digit(body)


def _new_referral_code() -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no look-alikes
    return "".join(secrets.choice(alphabet) for _ in range(8))


def member_create(
    *,
    email: str,
    display_name: str,
    password: str | None = None,
    birth_date: Any = None,
    referred_by: Member | None = None,
    now: datetime | None = None,
) -> Member:
    """Enrol a member: a unique 16-digit Luhn member number, a wallet and a referral code."""
    email = validate_text(email, field="email", required=True).strip()
    if "@" not in email or email.startswith("@") or email.endswith("@") or " " in email:
        raise InvalidInput("Not a valid email address", field="email")
    display_name = validate_text(display_name, field="displayName", required=True).strip()
    if Member.objects.filter(email__iexact=email).exists():
        raise InvalidInput("A member with this email already exists", field="email")
    now = now or timezone.now()
    for _attempt in range(10):
        try:
            with transaction.atomic():
                member = Member.objects.create(
                    member_number=_new_member_number(),
                    email=email,
                    display_name=display_name,
                    birth_date=birth_date,
                    password=make_password(password) if password else "",
                    referral_code=_new_referral_code(),
                    referred_by=referred_by,
                    created_at=now,
                )
                Account.objects.create(
                    kind=Account.Kind.MEMBER_WALLET, member=member, last_activity_at=now
                )
                return member
        except IntegrityError as exc:
            if "email" in str(exc).lower():
                raise InvalidInput(
                    "A member with this email already exists", field="email"
                ) from exc
            # A member number or referral code collided: draw again.
    raise RuntimeError("could not allocate a unique member number")


def member_set_status(*, member: Member, status: str) -> Member:
    """Suspend, close or reactivate a member. A closed member stays closed."""
    if status not in Member.Status.values:
        raise InvalidInput(f"Unknown status {status!r}", field="status")
    if member.status == Member.Status.CLOSED and status != Member.Status.CLOSED:
        raise InvalidState("A closed member cannot be reopened")
    member.status = status
    member.save(update_fields=["status"])
    return member


# --------------------------------------------------------------------------- earning


@ledger_write
def points_earn(
    *,
    caller: str,
    idempotency_key: str | None,
    member: Member,
    partner: Any = None,
    partner_points: int = 0,
    operator_points: int = 0,
    kind: str = Kind.EARN,
    reference: str = "",
    purchase_amount: Any = None,
    purchase_currency: str = "",
    metadata: dict | None = None,
    request_hash: str | None = None,
    now: datetime | None = None,
) -> LedgerTransaction:
    """Credit a member: `partner_points` issued by the partner (it pays issuance at
    settlement) plus `operator_points` from the operator's marketing account.

    The points go into a new lot that expires by the programme's policy. A wallet that a
    reversal took negative is repaid first.
    """
    if kind not in (Kind.EARN, Kind.BONUS):
        raise InvalidInput(f"Cannot earn as {kind}", field="kind")
    if idempotency_key is not None:
        validate_idempotency_key(idempotency_key)
    reference = validate_text(reference, field="reference")
    for value, field in ((partner_points, "partnerPoints"), (operator_points, "operatorPoints")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput("Points must be a whole number, zero or more", field=field)
    total = validate_points(partner_points + operator_points)
    if partner_points:
        _require_active_partner(partner)
    request_hash = request_hash or request_fingerprint(
        "points_earn",
        member=member.pk,
        partner=getattr(partner, "pk", None),
        partner_points=partner_points,
        operator_points=operator_points,
        kind=kind,
        reference=reference,
        purchase_amount=purchase_amount,
        purchase_currency=purchase_currency,
    )
    replay = transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if replay:
        return replay
    _require_active_member(member)
    now = now or timezone.now()
    legs = []
    if partner_points:
        issued = system_account_id(Account.Kind.PARTNER_ISSUED, partner_id=partner.pk)
        legs.append(Leg(issued, -partner_points))
    if operator_points:
        legs.append(Leg(system_account_id(Account.Kind.OPERATOR_MARKETING), -operator_points))

    wallet = _lock_wallet(member)
    replay = transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if replay:
        return replay
    balance_before = wallet.balance
    legs.append(Leg(wallet.pk, total))
    txn = _post(
        kind=kind,
        legs=legs,
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        member_id=member.pk,
        wallet=wallet,
        partner=partner,
        reference=reference,
        purchase_amount=purchase_amount,
        purchase_currency=purchase_currency,
        metadata=metadata,
    )
    _credit_lots(
        wallet,
        total,
        balance_before=balance_before,
        txn=txn,
        expires_at=lot_expiry(programme_get(), now),
    )
    _mark_activity(wallet, now)
    return txn


# --------------------------------------------------------------------------- spending


def _burn_rules(member: Member, points: int, now: datetime) -> None:
    """Programme guards against abuse: a minimum redemption and a daily burn limit."""
    programme = programme_get()
    if points < programme.min_redemption_points:
        raise InvalidInput(
            f"At least {programme.min_redemption_points} points must be redeemed", field="points"
        )
    if programme.daily_burn_limit:
        start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        burned_today = -(
            LedgerTransaction.objects.filter(
                member=member, kind=Kind.BURN, created_at__gte=start_of_day
            ).aggregate(total=Sum("member_points"))["total"]
            or 0
        )
        if burned_today + points > programme.daily_burn_limit:
            raise LimitExceeded(
                f"The daily limit of {programme.daily_burn_limit} redeemed points would be "
                f"exceeded ({burned_today} already today)",
                field="points",
            )


@ledger_write
def points_burn(
    *,
    caller: str,
    idempotency_key: str | None,
    member: Member,
    partner: Any,
    points: int,
    reference: str = "",
    metadata: dict | None = None,
    request_hash: str | None = None,
    now: datetime | None = None,
) -> LedgerTransaction:
    """Redeem points at a partner's till, spending the earliest-expiring lots first."""
    if idempotency_key is not None:
        validate_idempotency_key(idempotency_key)
    points = validate_points(points)
    reference = validate_text(reference, field="reference")
    request_hash = request_hash or request_fingerprint(
        "points_burn", member=member.pk, partner=partner.pk, points=points, reference=reference
    )
    replay = transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if replay:
        return replay
    _require_active_member(member)
    _require_active_partner(partner)
    now = now or timezone.now()
    redeemed = system_account_id(Account.Kind.PARTNER_REDEEMED, partner_id=partner.pk)

    wallet = _lock_wallet(member)
    replay = transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if replay:
        return replay
    _burn_rules(member, points, now)
    _release_due_holds(wallet, now)
    _require_spendable(wallet, points)
    lots = _consume_lots(wallet, points)
    txn = _post(
        kind=Kind.BURN,
        legs=[Leg(wallet.pk, -points), Leg(redeemed, points)],
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        member_id=member.pk,
        wallet=wallet,
        partner=partner,
        reference=reference,
        metadata={**(metadata or {}), "lots": lots},
    )
    _mark_activity(wallet, now)
    return txn


@ledger_write
def points_donate(
    *,
    caller: str,
    idempotency_key: str | None,
    member: Member,
    charity: Any,
    points: int,
    metadata: dict | None = None,
    request_hash: str | None = None,
    allow_held: bool = False,
    now: datetime | None = None,
) -> LedgerTransaction:
    """Give a member's points to a charity's account (earliest-expiring lots first)."""
    if idempotency_key is not None:
        validate_idempotency_key(idempotency_key)
    points = validate_points(points)
    request_hash = request_hash or request_fingerprint(
        "points_donate", member=member.pk, charity=charity.pk, points=points
    )
    replay = transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if replay:
        return replay
    _require_active_member(member)
    now = now or timezone.now()
    received = system_account_id(Account.Kind.CHARITY_RECEIVED, charity_id=charity.pk)

    wallet = _lock_wallet(member)
    replay = transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if replay:
        return replay
    _release_due_holds(wallet, now)
    _require_spendable(wallet, points)
    lots = _consume_lots(wallet, points)
    txn = _post(
        kind=Kind.DONATE,
        legs=[Leg(wallet.pk, -points), Leg(received, points)],
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        member_id=member.pk,
        wallet=wallet,
        charity=charity,
        metadata={**(metadata or {}), "lots": lots},
    )
    _mark_activity(wallet, now)
    return txn


# --------------------------------------------------------------------------- holds


@ledger_write
def hold_authorize(
    *,
    caller: str,
    idempotency_key: str,
    member: Member,
    partner: Any,
    points: int,
    reference: str = "",
    now: datetime | None = None,
) -> RedemptionHold:
    """Reserve points at a till, to be captured or voided; unused, it expires by itself."""
    validate_idempotency_key(idempotency_key)
    points = validate_points(points)
    reference = validate_text(reference, field="reference")
    request_hash = request_fingerprint(
        "hold_authorize", member=member.pk, partner=partner.pk, points=points, reference=reference
    )

    def replay() -> RedemptionHold | None:
        existing = RedemptionHold.objects.filter(
            caller=caller, idempotency_key=idempotency_key
        ).first()
        if existing and existing.request_hash != request_hash:
            raise IdempotencyConflict(
                "This idempotency key was already used for a different request",
                field="idempotencyKey",
            )
        return existing

    if existing := replay():
        return existing
    _require_active_member(member)
    _require_active_partner(partner)
    now = now or timezone.now()
    wallet = _lock_wallet(member)
    if existing := replay():
        return existing
    _burn_rules(member, points, now)
    _release_due_holds(wallet, now)
    _require_spendable(wallet, points)
    hold = RedemptionHold.objects.create(
        member=member,
        partner=partner,
        points=points,
        reference=reference,
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        expires_at=now + timedelta(minutes=_setting("HOLD_TTL_MINUTES")),
        created_at=now,
    )
    _set_held(wallet, wallet.held + points)
    return hold


def _lock_active_hold(hold: RedemptionHold, now: datetime) -> tuple[Account, RedemptionHold]:
    wallet = _lock_wallet(hold.member)
    hold = RedemptionHold.objects.select_related("member", "partner").get(pk=hold.pk)
    if hold.status != RedemptionHold.Status.ACTIVE:
        raise HoldNotActive(f"The hold is {hold.status}", field="holdId")
    if hold.expires_at <= now:
        raise HoldNotActive("The hold has expired", field="holdId")
    return wallet, hold


@ledger_write
def hold_capture(
    *,
    caller: str,
    idempotency_key: str,
    hold: RedemptionHold,
    points: int | None = None,
    now: datetime | None = None,
) -> LedgerTransaction:
    """Burn all or part of a hold's points; whatever is not captured is released."""
    validate_idempotency_key(idempotency_key)
    if points is not None:
        points = validate_points(points)
    request_hash = request_fingerprint("hold_capture", hold=hold.pk, points=points)
    if replay := transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    ):
        return replay
    now = now or timezone.now()
    redeemed = system_account_id(Account.Kind.PARTNER_REDEEMED, partner_id=hold.partner_id)
    wallet, hold = _lock_active_hold(hold, now)
    if replay := transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    ):
        return replay
    capture = hold.points if points is None else points
    if capture > hold.points:
        raise InvalidInput(
            f"Cannot capture {capture} points from a hold of {hold.points}", field="points"
        )
    # Release the reservation first: the capture spends what the hold kept aside.
    _set_held(wallet, wallet.held - hold.points)
    lots = _consume_lots(wallet, capture)
    txn = _post(
        kind=Kind.BURN,
        legs=[Leg(wallet.pk, -capture), Leg(redeemed, capture)],
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        member_id=hold.member_id,
        wallet=wallet,
        partner=hold.partner,
        reference=hold.reference,
        hold=hold,
        metadata={"lots": lots, "hold": hold.pk},
    )
    hold.status = RedemptionHold.Status.CAPTURED
    hold.captured_points = capture
    hold.resolved_at = now
    hold.save(update_fields=["status", "captured_points", "resolved_at"])
    _mark_activity(wallet, now)
    return txn


@ledger_write
def hold_void(
    *, caller: str, idempotency_key: str, hold: RedemptionHold, now: datetime | None = None
) -> RedemptionHold:
    """Release a hold's points without burning them."""
    validate_idempotency_key(idempotency_key)
    request_hash = request_fingerprint("hold_void", hold=hold.pk)
    lookup = {"caller": caller, "idempotency_key": idempotency_key}
    if idempotency_replay(**lookup, operation="hold_void", request_hash=request_hash):
        return RedemptionHold.objects.get(pk=hold.pk)
    now = now or timezone.now()
    wallet, hold = _lock_active_hold(hold, now)
    hold.status = RedemptionHold.Status.VOIDED
    hold.resolved_at = now
    hold.save(update_fields=["status", "resolved_at"])
    _set_held(wallet, wallet.held - hold.points)
    idempotency_record(
        **lookup, operation="hold_void", request_hash=request_hash, result_id=hold.pk
    )
    return hold


def holds_expire_due(*, now: datetime | None = None, limit: int = 10_000) -> list[int]:
    """Expire active holds past their time, releasing their points. Safe to run concurrently.

    Returns the ids of the holds this call expired.
    """
    now = now or timezone.now()
    member_ids = (
        RedemptionHold.objects.filter(status=RedemptionHold.Status.ACTIVE, expires_at__lte=now)
        .order_by("member_id")
        .values_list("member_id", flat=True)
        .distinct()[:limit]
    )
    expired: list[int] = []
    for member_id in list(member_ids):
        expired.extend(_expire_member_holds(member_id, now))
    return expired


@ledger_write
def _expire_member_holds(member_id: int, now: datetime) -> list[int]:
    wallet = Account.objects.select_for_update().get(member_id=member_id)
    due = [
        hold.pk
        for hold in RedemptionHold.objects.filter(
            member_id=member_id, status=RedemptionHold.Status.ACTIVE, expires_at__lte=now
        )
    ]
    _release_due_holds(wallet, now)
    return due


# --------------------------------------------------------------------------- expiry


def points_expire_due(*, now: datetime | None = None, batch_size: int = 500) -> int:
    """Expire due points into programme breakage; returns how many points expired.

    Fixed lifetime: lots whose expiry has passed. Inactivity: every lot of a member whose
    last activity is older than the programme's months. Points reserved by an active hold
    are left until the hold is resolved. Each member is its own short transaction, so a
    sweep never blocks a member's burn for long; two sweeps at once do the work once.
    """
    now = now or timezone.now()
    programme = programme_get()
    if programme.expiry_policy == Programme.ExpiryPolicy.NONE:
        return 0
    expired_total = 0
    last_member_id = 0
    while True:
        if programme.expiry_policy == Programme.ExpiryPolicy.FIXED:
            candidates = PointLot.objects.filter(
                remaining__gt=0, expires_at__lte=now, member_id__gt=last_member_id
            ).values_list("member_id", flat=True)
        else:
            inactive_since = add_months(now, -programme.expiry_months)
            candidates = Account.objects.filter(
                kind=Account.Kind.MEMBER_WALLET,
                balance__gt=0,
                last_activity_at__lte=inactive_since,
                member_id__gt=last_member_id,
            ).values_list("member_id", flat=True)
        batch = list(candidates.order_by("member_id").distinct()[:batch_size])
        if not batch:
            return expired_total
        for member_id in batch:
            expired_total += _expire_member(member_id, programme, now)
        last_member_id = batch[-1]


@ledger_write
def _expire_member(member_id: int, programme: Programme, now: datetime) -> int:
    wallet = Account.objects.select_for_update().get(member_id=member_id)
    lots = PointLot.objects.filter(member_id=member_id, remaining__gt=0)
    if programme.expiry_policy == Programme.ExpiryPolicy.FIXED:
        lots = lots.filter(expires_at__lte=now)
    else:
        inactive_since = add_months(now, -programme.expiry_months)
        if wallet.last_activity_at and wallet.last_activity_at > inactive_since:
            return 0  # active again since the candidates were listed
    due = list(lots.values_list("id", "remaining"))
    points = min(sum(remaining for _, remaining in due), max(wallet.balance - wallet.held, 0))
    if points <= 0:
        return 0
    consumed = _consume_lots(wallet, points, lot_ids=[lot_id for lot_id, _ in due])
    _post(
        kind=Kind.EXPIRE,
        legs=[Leg(wallet.pk, -points), Leg(system_account_id(Account.Kind.BREAKAGE), points)],
        caller="system:expiry",
        idempotency_key=None,
        request_hash="",
        created_at=now,
        member_id=member_id,
        wallet=wallet,
        metadata={"lots": consumed, "policy": programme.expiry_policy},
    )
    return points


# --------------------------------------------------------------------------- reversals

REVERSIBLE_KINDS = frozenset({Kind.EARN, Kind.BONUS, Kind.BURN, Kind.DONATE})


def split_largest_remainder(total: int, weights: list[int]) -> list[int]:
    """Split `total` in proportion to `weights` so that the parts add back to `total`."""
    weight_sum = sum(weights)
    if weight_sum == 0:
        raise ValueError("cannot split by zero weights")
    exact = [total * weight for weight in weights]
    parts = [value // weight_sum for value in exact]
    remainders = sorted(range(len(weights)), key=lambda i: (-(exact[i] % weight_sum), i))
    for index in remainders[: total - sum(parts)]:
        parts[index] += 1
    return parts


def reversible_points(original: LedgerTransaction) -> int:
    """How many of a transaction's member points are not yet reversed."""
    reversed_so_far = sum(
        abs(points) for points in original.reversals.values_list("member_points", flat=True)
    )
    return abs(original.member_points) - reversed_so_far


@ledger_write
def transaction_reverse(
    *,
    caller: str,
    idempotency_key: str,
    transaction_to_reverse: LedgerTransaction,
    points: int | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> LedgerTransaction:
    """Reverse a member transaction in full or in part (a refund), mirroring its entries.

    Never more than what remains unreversed. Reversing an earn the member already spent may
    take the wallet negative; while negative the member can't burn, hold or donate. Points
    given back by a reversed burn return to the lots they came from, with their expiry.
    """
    original = transaction_to_reverse
    validate_idempotency_key(idempotency_key)
    reason = validate_text(reason, field="reason")
    if points is not None:
        points = validate_points(points)
    request_hash = request_fingerprint(
        "transaction_reverse", transaction=original.pk, points=points, reason=reason
    )
    if replay := transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    ):
        return replay
    if original.kind == Kind.REVERSAL:
        raise InvalidState("A reversal cannot itself be reversed", field="transactionId")
    if original.kind not in REVERSIBLE_KINDS or original.member_id is None:
        raise InvalidState(
            f"A {original.kind} transaction cannot be reversed", field="transactionId"
        )
    now = now or timezone.now()
    wallet = Account.objects.select_for_update().get(member_id=original.member_id)
    if replay := transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    ):
        return replay
    remaining = reversible_points(original)
    if remaining <= 0:
        raise AlreadyReversed("The transaction is already fully reversed", field="transactionId")
    amount = remaining if points is None else points
    if amount > remaining:
        raise InvalidInput(
            f"Only {remaining} points of this transaction remain to be reversed", field="points"
        )

    original_legs = list(original.entries.values_list("account_id", "points"))
    other_legs = [(account, pts) for account, pts in original_legs if account != wallet.pk]
    parts = split_largest_remainder(amount, [abs(pts) for _, pts in other_legs])
    direction = 1 if original.member_points > 0 else -1  # +1: the original credited the member
    legs = [Leg(wallet.pk, -direction * amount)]
    legs += [
        Leg(account, direction * part) for (account, _), part in zip(other_legs, parts, strict=True)
    ]

    balance_before = wallet.balance
    metadata: dict[str, Any] = {"reason": reason}
    extra_lot_points = 0
    if direction > 0:
        # Take back the original's own lot first, then the earliest-expiring ones.
        own_lots = list(original.lots.values_list("id", flat=True))
        metadata["lots"] = _consume_lots(wallet, amount, prefer_lot_ids=own_lots)
    else:
        # Give the points back to the lots the burn took them from, keeping their expiry.
        quota = _unrestored_lots(original)
        restorable = min(amount, sum(left for _, left in quota))
        metadata["restored"] = _credit_lots(
            wallet, restorable, balance_before=balance_before, restore=quota
        )
        extra_lot_points = amount - restorable
    txn = _post(
        kind=Kind.REVERSAL,
        legs=legs,
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        member_id=original.member_id,
        wallet=wallet,
        partner=original.partner,
        charity=original.charity,
        reference=original.reference,
        reversal_of=original,
        metadata=metadata,
    )
    if extra_lot_points:
        # A burn made before lots were tracked for it: the points get a fresh lot.
        _credit_lots(
            wallet,
            extra_lot_points,
            balance_before=balance_before + restorable,
            txn=txn,
            expires_at=lot_expiry(programme_get(), now),
        )
    return txn


def _unrestored_lots(burn: LedgerTransaction) -> list[list[int]]:
    """The lots a burn consumed, less what earlier reversals of it gave back."""
    restored: dict[int, int] = {}
    for earlier in burn.reversals.all():
        for lot_id, points in earlier.metadata.get("restored", []):
            restored[lot_id] = restored.get(lot_id, 0) + points
    quota = []
    for lot_id, taken in burn.metadata.get("lots", []):
        left = taken - restored.pop(lot_id, 0)
        if left > 0:
            quota.append([lot_id, left])
    return quota


# --------------------------------------------------------------------------- adjustments


@ledger_write
def points_adjust(
    *,
    staff_user: Any,
    member: Member,
    points: int,
    reason: str,
    idempotency_key: str,
    now: datetime | None = None,
) -> LedgerTransaction:
    """An operator's correction of a member's points, with who made it and why.

    Positive points are credited from the operator's adjustment account into a new lot;
    negative points are taken back, never below what the member can spend.
    """
    validate_idempotency_key(idempotency_key)
    if isinstance(points, bool) or not isinstance(points, int) or points == 0:
        raise InvalidInput("Points must be a non-zero whole number", field="points")
    validate_points(abs(points))
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("A reason is required for an adjustment", field="reason")
    if staff_user is None or not getattr(staff_user, "is_staff", False):
        raise InvalidState("Only staff may adjust points", field="staffUser")
    caller = f"staff:{staff_user.pk}"
    request_hash = request_fingerprint(
        "points_adjust", member=member.pk, points=points, reason=reason
    )
    if replay := transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    ):
        return replay
    now = now or timezone.now()
    operator = system_account_id(Account.Kind.OPERATOR_ADJUSTMENT)
    wallet = _lock_wallet(member)
    if replay := transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    ):
        return replay
    balance_before = wallet.balance
    lots: list[list[int]] = []
    if points < 0:
        _require_spendable(wallet, -points)
        lots = _consume_lots(wallet, -points)
    txn = _post(
        kind=Kind.ADJUSTMENT,
        legs=[Leg(wallet.pk, points), Leg(operator, -points)],
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        member_id=member.pk,
        wallet=wallet,
        metadata={"reason": reason, "lots": lots},
    )
    if points > 0:
        _credit_lots(
            wallet,
            points,
            balance_before=balance_before,
            txn=txn,
            expires_at=lot_expiry(programme_get(), now),
        )
    AdjustmentNote.objects.create(transaction=txn, staff_user=staff_user, reason=reason)
    return txn

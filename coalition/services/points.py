"""Earning, burning and donating points."""

from datetime import datetime
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from ..errors import (
    InvalidInput,
    LimitExceeded,
)
from ..models import (
    Account,
    LedgerTransaction,
    Member,
    RedemptionHold,
)
from .idempotency import ledger_write, request_fingerprint, transaction_replay
from .posting import (
    Leg,
    _consume_lots,
    _credit_lots,
    _lock_wallet,
    _lock_wallet_unless_replay,
    _post,
    _post_credit,
    _post_spend,
    _release_due_holds,
    _require_active_member,
    _require_active_partner,
    _require_spendable,
    credit_in_one_statement,
    lot_expiry,
    programme_get,
    system_account_id,
    validate_idempotency_key,
    validate_points,
    validate_text,
)
from .tiers import member_tier_upgrade

Kind = LedgerTransaction.Kind


# --------------------------------------------------------------------------- earning


def _replay(*, caller: str, idempotency_key: str | None, request_hash: str) -> LedgerTransaction:
    """The transaction written earlier under this key, which the write statement found (an
    IdempotencyConflict if it was for another request)."""
    replay = transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if replay is None:
        raise AssertionError("an idempotent write found an earlier one that is not there")
    return replay


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
    now = now or timezone.now()
    legs = []
    if partner_points:
        issued = system_account_id(Account.Kind.PARTNER_ISSUED, partner_id=partner.pk)
        legs.append(Leg(issued, -partner_points))
    if operator_points:
        legs.append(Leg(system_account_id(Account.Kind.OPERATOR_MARKETING), -operator_points))

    if credit_in_one_statement() and member.status == Member.Status.ACTIVE:
        # PostgreSQL: the replay check, the wallet lock and every row in one statement.
        txn, _ = _post_credit(
            kind=kind,
            member=member,
            points=total,
            issuer_legs=legs,
            caller=caller,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            now=now,
            partner=partner,
            reference=reference,
            purchase_amount=purchase_amount,
            purchase_currency=purchase_currency,
            metadata=metadata,
            expires_at=lot_expiry(programme_get(), now),
        )
        if txn is None:
            # The key was used before (or by a concurrent request that has now committed).
            return _replay(
                caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
            )
        member_tier_upgrade(member=member, now=now)
        return txn

    # One replay check, before the lock: a concurrent request with the same key is caught by
    # the unique index, and ledger_write's retry then finds and replays the first result.
    replay = transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if replay:
        return replay
    _require_active_member(member)
    wallet = _lock_wallet(member, touch=now)
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
    member_tier_upgrade(member=member, now=now)
    return txn


# --------------------------------------------------------------------------- spending


def _burn_rules(member: Member, points: int, now: datetime, *, apply_minimum: bool = True) -> None:
    """Programme guards against abuse: a minimum redemption and a daily burn limit."""
    programme = programme_get()
    if apply_minimum and points < programme.min_redemption_points:
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
        # Points an active hold reserves are redeemed when it is captured: they count too,
        # or two-phase redemption would bypass the limit.
        reserved = (
            RedemptionHold.objects.filter(
                member=member, status=RedemptionHold.Status.ACTIVE, expires_at__gt=now
            ).aggregate(total=Sum("points"))["total"]
            or 0
        )
        if burned_today + reserved + points > programme.daily_burn_limit:
            raise LimitExceeded(
                f"The daily limit of {programme.daily_burn_limit} redeemed points would be "
                f"exceeded ({burned_today} already today, {reserved} reserved by holds)",
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
    apply_minimum: bool = True,
    now: datetime | None = None,
) -> LedgerTransaction:
    """Redeem points at a partner's till, spending the earliest-expiring lots first.

    `apply_minimum=False` waives the programme's minimum redemption, for catalogue rewards
    whose price the partner set.
    """
    if idempotency_key is not None:
        validate_idempotency_key(idempotency_key)
    points = validate_points(points)
    reference = validate_text(reference, field="reference")
    request_hash = request_hash or request_fingerprint(
        "points_burn", member=member.pk, partner=partner.pk, points=points, reference=reference
    )
    now = now or timezone.now()
    wallet, replayed = _lock_wallet_unless_replay(
        member, touch=now, caller=caller, idempotency_key=idempotency_key
    )
    if replayed:
        return _replay(caller=caller, idempotency_key=idempotency_key, request_hash=request_hash)
    _require_active_member(member)
    _require_active_partner(partner)
    redeemed = system_account_id(Account.Kind.PARTNER_REDEEMED, partner_id=partner.pk)

    return _spend(
        kind=Kind.BURN,
        wallet=wallet,
        member=member,
        points=points,
        counter_account=redeemed,
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        now=now,
        partner=partner,
        reference=reference,
        metadata=metadata,
        rules=lambda: _burn_rules(member, points, now, apply_minimum=apply_minimum),
    )


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
    now: datetime | None = None,
) -> LedgerTransaction:
    """Give a member's points to a charity's account (earliest-expiring lots first)."""
    if idempotency_key is not None:
        validate_idempotency_key(idempotency_key)
    points = validate_points(points)
    request_hash = request_hash or request_fingerprint(
        "points_donate", member=member.pk, charity=charity.pk, points=points
    )
    now = now or timezone.now()
    wallet, replayed = _lock_wallet_unless_replay(
        member, touch=now, caller=caller, idempotency_key=idempotency_key
    )
    if replayed:
        return _replay(caller=caller, idempotency_key=idempotency_key, request_hash=request_hash)
    _require_active_member(member)
    received = system_account_id(Account.Kind.CHARITY_RECEIVED, charity_id=charity.pk)

    return _spend(
        kind=Kind.DONATE,
        wallet=wallet,
        member=member,
        points=points,
        counter_account=received,
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        now=now,
        charity=charity,
        metadata=metadata,
    )


def _spend(
    *,
    kind: str,
    wallet: Account,
    member: Member,
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
    rules: Any = None,
) -> LedgerTransaction:
    """Take points out of a member's wallet (locked by the caller, the activity noted) into
    another account: apply the caller's rules under the lock, release lapsed holds, check
    what is spendable, consume the earliest-expiring lots and post."""
    if rules is not None:
        rules()
    _release_due_holds(wallet, now)
    _require_spendable(wallet, points)
    if credit_in_one_statement():
        return _post_spend(
            kind=kind,
            wallet=wallet,
            points=points,
            counter_account=counter_account,
            caller=caller,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            now=now,
            partner=partner,
            charity=charity,
            reference=reference,
            metadata=metadata,
        )
    lots = _consume_lots(wallet, points)
    return _post(
        kind=kind,
        legs=[Leg(wallet.pk, -points), Leg(counter_account, points)],
        caller=caller,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        member_id=member.pk,
        wallet=wallet,
        partner=partner,
        charity=charity,
        reference=reference,
        metadata={**(metadata or {}), "lots": lots},
    )

"""Reads of the programme and its ledger. Which rows a caller may see is decided here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import QuerySet, Sum
from django.utils import timezone

from .errors import InvalidInput, NotFound
from .models import Account, LedgerTransaction, Member, PointLot, Programme, RedemptionHold


def member_get_by_number(*, member_number: str) -> Member:
    """The member with this number, or NotFound (a malformed number is not found either)."""
    if not isinstance(member_number, str) or not member_number.isdigit():
        raise NotFound("No member with this number", field="memberNumber")
    member = Member.objects.filter(member_number=member_number).first()
    if member is None:
        raise NotFound("No member with this number", field="memberNumber")
    return member


def member_wallet(*, member: Member) -> Account:
    return Account.objects.get(member_id=member.pk)


@dataclass(frozen=True)
class Balance:
    balance: int  # the wallet's points, holds included
    held: int  # reserved by active holds
    spendable: int  # what the member can use now


def member_balance(*, member: Member) -> Balance:
    wallet = member_wallet(member=member)
    return Balance(
        balance=wallet.balance,
        held=wallet.held,
        spendable=max(wallet.balance - wallet.held, 0),
    )


def member_history(*, member: Member, partner_id: int | None = None) -> QuerySet:
    """A member's transactions, newest first; a partner sees only its own."""
    transactions = LedgerTransaction.objects.filter(member=member)
    if partner_id is not None:
        transactions = transactions.filter(partner_id=partner_id)
    return transactions.order_by("-created_at", "-id")


@dataclass(frozen=True)
class ExpiringPoints:
    points: int
    expires_at: datetime


def member_expiring_points(
    *, member: Member, within_days: int = 30, now: datetime | None = None
) -> list[ExpiringPoints]:
    """Points that will expire within the window, grouped by expiry moment, soonest first."""
    if isinstance(within_days, bool) or not isinstance(within_days, int) or within_days < 0:
        raise InvalidInput("withinDays must be zero or more", field="withinDays")
    within_days = min(within_days, 3660)
    now = now or timezone.now()
    programme = Programme.objects.order_by("id").first()
    if programme and programme.expiry_policy == Programme.ExpiryPolicy.INACTIVITY:
        from .services.posting import add_months

        wallet = member_wallet(member=member)
        if wallet.balance <= 0 or wallet.last_activity_at is None:
            return []
        expires_at = add_months(wallet.last_activity_at, programme.expiry_months)
        if expires_at > now + timedelta(days=within_days):
            return []
        return [ExpiringPoints(points=wallet.balance - wallet.held, expires_at=expires_at)]
    rows = (
        PointLot.objects.filter(
            member=member,
            remaining__gt=0,
            expires_at__isnull=False,
            expires_at__lte=now + timedelta(days=within_days),
        )
        .values("expires_at")
        .annotate(points=Sum("remaining"))
        .order_by("expires_at")
    )
    return [ExpiringPoints(points=row["points"], expires_at=row["expires_at"]) for row in rows]


def hold_get(*, hold_id: int, partner_id: int | None = None) -> RedemptionHold:
    """A hold; a partner can only reach its own (others are not found)."""
    holds = RedemptionHold.objects.select_related("member", "partner")
    if partner_id is not None:
        holds = holds.filter(partner_id=partner_id)
    hold = holds.filter(pk=hold_id).first()
    if hold is None:
        raise NotFound("No such hold", field="holdId")
    return hold


def account_balance(*, account_id: int) -> int:
    """Any account's balance, summed from its entries (partner and programme accounts)."""
    from .models import Entry

    return Entry.objects.filter(account_id=account_id).aggregate(total=Sum("points"))["total"] or 0


# --------------------------------------------------------------------------- integrity

_CHECKS = {
    "transaction does not balance": """
        SELECT t.id, coalesce(sum(e.points), 0), count(e.id)
          FROM coalition_transaction t LEFT JOIN coalition_entry e ON e.transaction_id = t.id
         GROUP BY t.id
        HAVING coalesce(sum(e.points), 0) <> 0 OR count(e.id) < 2
    """,
    "wallet cached balance differs from its entries": """
        SELECT a.id, a.balance, coalesce(s.total, 0)
          FROM coalition_account a
          LEFT JOIN (SELECT account_id, sum(points) AS total FROM coalition_entry
                      GROUP BY account_id) s ON s.account_id = a.id
         WHERE a.kind = 'member_wallet' AND a.balance <> coalesce(s.total, 0)
    """,
    "wallet lots do not hold its positive balance": """
        SELECT a.id, a.balance, coalesce(l.total, 0)
          FROM coalition_account a
          LEFT JOIN (SELECT member_id, sum(remaining) AS total FROM coalition_lot
                      GROUP BY member_id) l ON l.member_id = a.member_id
         WHERE a.kind = 'member_wallet'
           AND coalesce(l.total, 0) <> CASE WHEN a.balance > 0 THEN a.balance ELSE 0 END
    """,
    "lot over-consumed": """
        SELECT id, points, remaining FROM coalition_lot
         WHERE remaining < 0 OR remaining > points
    """,
    "wallet held points differ from its active holds": """
        SELECT a.id, a.held, coalesce(h.total, 0)
          FROM coalition_account a
          LEFT JOIN (SELECT member_id, sum(points) AS total FROM coalition_hold
                      WHERE status = 'active' GROUP BY member_id) h ON h.member_id = a.member_id
         WHERE a.kind = 'member_wallet' AND a.held <> coalesce(h.total, 0)
    """,
    "transaction member points differ from its wallet entries": """
        SELECT t.id, t.member_points, coalesce(w.total, 0)
          FROM coalition_transaction t
          LEFT JOIN (SELECT e.transaction_id, sum(e.points) AS total
                       FROM coalition_entry e JOIN coalition_account a ON a.id = e.account_id
                      WHERE a.kind = 'member_wallet' GROUP BY e.transaction_id) w
                 ON w.transaction_id = t.id
         WHERE t.member_points <> coalesce(w.total, 0)
    """,
    "reversal exceeds its original": """
        SELECT o.id, abs(o.member_points), sum(abs(r.member_points))
          FROM coalition_transaction o JOIN coalition_transaction r ON r.reversal_of_id = o.id
         GROUP BY o.id, o.member_points
        HAVING sum(abs(r.member_points)) > abs(o.member_points)
    """,
    "wallet spent below zero by a spend": """
        SELECT a.id, a.balance, a.held FROM coalition_account a
         WHERE a.kind = 'member_wallet' AND a.balance >= 0 AND a.held > a.balance
           AND NOT EXISTS (SELECT 1 FROM coalition_transaction t
                            WHERE t.member_id = a.member_id AND t.kind = 'reversal')
    """,
}


@dataclass(frozen=True)
class LedgerReport:
    transactions: int
    entries: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def ledger_check() -> LedgerReport:
    """Prove the ledger's invariants; every breach is listed, none is fixed."""
    problems: list[str] = []
    with connection.cursor() as cursor:
        for label, sql in _CHECKS.items():
            cursor.execute(sql)
            for row in cursor.fetchall():
                problems.append(f"{label}: " + ", ".join(str(value) for value in row))
        cursor.execute("SELECT count(*) FROM coalition_transaction")
        transactions = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM coalition_entry")
        entries = cursor.fetchone()[0]
    return LedgerReport(transactions=transactions, entries=entries, problems=problems)


# --------------------------------------------------------------------------- visibility
# Added for the API (issue 4). Which rows a reader may see is decided here, once: the API
# maps its credential to a `Viewer` and never filters rows itself.


@dataclass(frozen=True)
class Viewer:
    """Who is reading: a member (themselves), a partner (its own dealings) or staff (all).

    A viewer naming nobody (anonymous) sees no member data at all.
    """

    member_id: int | None = None
    partner_id: int | None = None
    staff: bool = False


def transactions_visible(*, viewer: Viewer) -> QuerySet:
    """Ledger transactions the viewer may read: a member its own, a partner those made at
    its tills (for any member), staff every one."""
    transactions = LedgerTransaction.objects.all()
    if viewer.staff:
        return transactions
    if viewer.member_id is not None:
        return transactions.filter(member_id=viewer.member_id)
    if viewer.partner_id is not None:
        return transactions.filter(partner_id=viewer.partner_id, member__isnull=False)
    return transactions.none()


def member_transactions_visible(*, member: Member, viewer: Viewer) -> QuerySet:
    """One member's history as the viewer may see it, newest first (a partner: its own)."""
    return (
        transactions_visible(viewer=viewer)
        .filter(member_id=member.pk)
        .order_by("-created_at", "-id")
    )


def holds_visible(*, viewer: Viewer) -> QuerySet:
    """Redemption holds the viewer may read: the member's own, the partner's own, or all."""
    holds = RedemptionHold.objects.all()
    if viewer.staff:
        return holds
    if viewer.member_id is not None:
        return holds.filter(member_id=viewer.member_id)
    if viewer.partner_id is not None:
        return holds.filter(partner_id=viewer.partner_id)
    return holds.none()


def members_visible_by_id(*, viewer: Viewer) -> QuerySet:
    """Members the viewer may reach by their id: only themselves, or all for staff.

    Partners reach members by member number only (`member_get_by_number`).
    """
    if viewer.staff:
        return Member.objects.all()
    if viewer.member_id is not None:
        return Member.objects.filter(pk=viewer.member_id)
    return Member.objects.none()


def transaction_get_for_partner(*, partner_id: int, transaction_id: int) -> LedgerTransaction:
    """One of the partner's own transactions; any other is not found (never leaked)."""
    txn = LedgerTransaction.objects.filter(pk=transaction_id, partner_id=partner_id).first()
    if txn is None:
        raise NotFound("No such transaction", field="transactionId")
    return txn


def member_lifetime_earned(*, member: Member) -> int:
    """Points ever earned (earns and bonuses) less what reversals took back of them."""
    from django.db.models import Q

    earned = LedgerTransaction.objects.filter(member=member).filter(
        Q(kind__in=[LedgerTransaction.Kind.EARN, LedgerTransaction.Kind.BONUS])
        | Q(
            kind=LedgerTransaction.Kind.REVERSAL,
            reversal_of__kind__in=[LedgerTransaction.Kind.EARN, LedgerTransaction.Kind.BONUS],
        )
    )
    return earned.aggregate(total=Sum("member_points"))["total"] or 0


def wallets_by_member(*, member_ids) -> dict[int, Account]:
    """Member wallets keyed by member id, in one query."""
    return {
        wallet.member_id: wallet
        for wallet in Account.objects.filter(
            kind=Account.Kind.MEMBER_WALLET, member_id__in=list(member_ids)
        )
    }


def member_authenticate(*, email: str, password: str) -> Member:
    """The member with this email and password, for a login.

    Unknown email, wrong password and a member without a password all give the same
    refusal (and take about as long: a hash is computed either way). A suspended or closed
    member is refused once the password is right.
    """
    from django.contrib.auth.hashers import check_password, make_password

    from .errors import MemberNotActive, PermissionDenied

    refusal = PermissionDenied("The email or the password is wrong")
    if not isinstance(email, str) or not isinstance(password, str) or len(password) > 128:
        raise refusal
    member = Member.objects.filter(email__iexact=email.strip()).first() if email else None
    if member is None or not member.password:
        make_password(password)  # the same work as a real check
        raise refusal
    if not check_password(password, member.password):
        raise refusal
    if member.status != Member.Status.ACTIVE:
        raise MemberNotActive(f"This membership is {member.status}")
    return member


def member_private_visible(*, member: Member, viewer: Viewer) -> bool:
    """May the viewer see the member's private dealings (donations, giving choices)?
    The member itself and staff may; a partner that looked the member up may not."""
    return viewer.staff or viewer.member_id == member.pk

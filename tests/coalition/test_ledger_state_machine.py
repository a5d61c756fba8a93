"""Random sequences of ledger operations against a model of what every wallet should hold.

Hypothesis drives earns, burns, holds, captures, voids, donations, full and partial reversals,
time travel with expiry sweeps, retries with the same key and requests that must be refused,
over 3 members, 2 partners and 1 charity. After every step every `ledger_check` invariant
holds, every wallet matches the model, and no wallet is negative except through a reversal.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from charity.models import Charity
from coalition import selectors, services
from coalition.errors import ErrorCode
from coalition.models import (
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
from partners.models import Partner
from tests import factories

Kind = LedgerTransaction.Kind
Status = RedemptionHold.Status
T0 = datetime(2030, 1, 1, tzinfo=UTC)
MEMBERS = st.integers(min_value=0, max_value=2)
PARTNERS = st.integers(min_value=0, max_value=1)
EARN_POINTS = st.integers(min_value=1, max_value=400)
POINTS = st.integers(min_value=1, max_value=200)
SOME_POINTS = st.none() | st.integers(min_value=1, max_value=200)  # None: all of it
# Holds last 5 days here and lots at most a month: short steps keep holds alive while lots
# fall due, long ones let holds run out before the job or the member's next spend ends them.
HOLD_TTL_MINUTES = 5 * 24 * 60
TIME_STEPS = st.sampled_from(
    [timedelta(hours=1), timedelta(days=4), timedelta(days=9), timedelta(days=17)]
)
# How often each operation is drawn (the opening earns leave `calls` and `txns` non-empty).
OPERATIONS = (
    ["spend"] * 5
    + ["resolve_hold"] * 4
    + ["reverse"] * 3
    + ["time_passes"] * 2
    + ["send_again"] * 2
    + ["earn"] * 2
    + ["refused"] * 1
)
LEDGER_TABLES = [
    model._meta.db_table
    for model in (
        Entry,
        PointLot,
        AdjustmentNote,
        LedgerTransaction,
        RedemptionHold,
        IdempotencyRecord,
        Account,
        Member,
        Programme,
        Partner,
        Charity,
    )
]


@dataclass
class Txn:
    obj: LedgerTransaction
    member: int
    kind: str
    member_points: int
    reversed: int = 0
    from_breakage: int = 0  # an earn's expired points its reversals took back from breakage


@dataclass
class Hold:
    obj: RedemptionHold
    member: int
    points: int
    expires_at: datetime
    status: str = Status.ACTIVE


@dataclass
class Call:
    """A write that succeeded: `run(key, other)` repeats it (`other`: a different payload)."""

    run: Any
    key: str
    pk: int
    can_conflict: bool = True


@dataclass
class Wallet:
    balance: int = 0
    earn_reversed: bool = False  # the only way a wallet may go negative
    holds: list[Hold] = field(default_factory=list)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        # A fresh ledger for every example.
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(LEDGER_TABLES)} RESTART IDENTITY CASCADE")
        Programme.objects.create(
            min_redemption_points=1,
            expiry_policy=Programme.ExpiryPolicy.FIXED,
            expiry_months=1,
        )
        self.members = [factories.member() for _ in range(3)]
        self.partners = [factories.PartnerFactory() for _ in range(2)]
        self.charity = factories.CharityFactory()
        self.now = T0
        self.hold_ttl = timedelta(minutes=settings.COALITION["HOLD_TTL_MINUTES"])
        self.wallets = [Wallet() for _ in self.members]
        self.txns: list[Txn] = []
        self.holds: list[Hold] = []
        self.calls: list[Call] = []

    # ------------------------------------------------------------------ the model

    def active_held(self, m: int) -> int:
        """Points reserved by holds that are active and not yet due."""
        return sum(
            h.points
            for h in self.wallets[m].holds
            if h.status == Status.ACTIVE and h.expires_at > self.now
        )

    def stored_held(self, m: int) -> int:
        """Points the wallet row says are held (due holds count until something releases them)."""
        return sum(h.points for h in self.wallets[m].holds if h.status == Status.ACTIVE)

    def release_due(self, m: int) -> None:
        for h in self.wallets[m].holds:
            if h.status == Status.ACTIVE and h.expires_at <= self.now:
                h.status = Status.EXPIRED

    def breakage_share(self, earn: Txn, amount: int) -> int:
        """What reversing `amount` of an earn takes back out of breakage rather than from the
        wallet: once what the member still holds of the earn's lot is taken, what that lot
        lost to the expiries seen so far and breakage has not given back yet."""
        lots = dict(PointLot.objects.filter(transaction=earn.obj).values_list("id", "remaining"))
        wanted = amount - min(amount, sum(lots.values()))
        lost = sum(
            points
            for t in self.txns
            if t.kind == Kind.EXPIRE
            for lot_id, points in t.obj.metadata["lots"]
            if lot_id in lots
        )
        return min(wanted, lost - earn.from_breakage)

    def spend_refusal(self, m: int, points: int) -> ErrorCode | None:
        wallet = self.wallets[m]
        if wallet.balance < 0 or points > wallet.balance - self.active_held(m):
            return ErrorCode.INSUFFICIENT_POINTS
        return None

    def attempt(self, refusal: ErrorCode | None, run, *, m: int, **call) -> Any:
        """Run a write under a fresh key. Expected to succeed: remember it for retries.
        Expected to be refused: check the code and that nothing was written."""
        key = factories.key()
        if refusal is not None:
            factories.assert_refused(refusal, lambda: run(key))
            return None
        result = run(key)
        self.calls.append(Call(run=run, key=key, pk=result.pk, **call))
        if isinstance(result, LedgerTransaction):
            self.txns.append(Txn(result, m, result.kind, result.member_points))
        return result

    def spend_call(self, how: str, m: int, p: int, points: int):
        member, partner = self.members[m], self.partners[p]

        def run(key, other=False):
            asked = points + other
            if how == "earn":
                return factories.earn(member, partner, asked, idempotency_key=key, now=self.now)
            if how == "burn":
                return factories.burn(member, partner, asked, idempotency_key=key, now=self.now)
            if how == "hold":
                return factories.hold(member, partner, asked, idempotency_key=key, now=self.now)
            return factories.donate(member, self.charity, asked, idempotency_key=key, now=self.now)

        return run

    # ------------------------------------------------------------------ steps
    # One rule draws the operation from a weighted list, so that every example mixes all of
    # them in proportions that reach interesting states (holds that run out, wallets owing
    # points, sweeps meeting holds); each operation draws its own arguments.

    @initialize(
        opening=st.lists(st.integers(200, 1000), min_size=3, max_size=3),
        lifetime_months=st.sampled_from([0, 1]),
    )
    def open_wallets(self, opening, lifetime_months):
        # Lots last a month, or expire at the next sweep (so that sweeps keep meeting holds).
        Programme.objects.update(expiry_months=lifetime_months)
        # Every member starts with points to spend.
        for m, points in enumerate(opening):
            self.attempt(None, self.spend_call("earn", m, 0, points), m=m)
            self.wallets[m].balance += points

    @rule(data=st.data())
    def step(self, data):
        operations = list(OPERATIONS)
        if not self.holds:
            operations = [op for op in operations if op != "resolve_hold"]
        operation = data.draw(st.sampled_from(operations), label="operation")
        getattr(self, operation)(data)

    def earn(self, data):
        m, p = data.draw(MEMBERS, label="member"), data.draw(PARTNERS, label="partner")
        points = data.draw(EARN_POINTS, label="points")
        self.attempt(None, self.spend_call("earn", m, p, points), m=m)
        self.wallets[m].balance += points

    def spend(self, data):
        how = data.draw(st.sampled_from(["hold", "burn", "hold", "donate"]), label="how")
        # Often a member with a hold that ran out but was not expired yet: the spend frees it.
        stale = [m for m in range(len(self.members)) if self.stored_held(m) > self.active_held(m)]
        if stale and data.draw(st.booleans(), label="stale"):
            m = data.draw(st.sampled_from(stale), label="member")
        else:
            m = data.draw(MEMBERS, label="member")
        p = data.draw(PARTNERS, label="partner")
        points = data.draw(POINTS, label="points")
        result = self.attempt(
            self.spend_refusal(m, points), self.spend_call(how, m, p, points), m=m
        )
        if result is None:
            return
        self.release_due(m)  # the service released the member's due holds first
        if how == "hold":
            model = Hold(result, m, points, self.now + self.hold_ttl)
            self.wallets[m].holds.append(model)
            self.holds.append(model)
        else:
            self.wallets[m].balance -= points

    def resolve_hold(self, data):
        capture = data.draw(st.booleans(), label="capture")
        usable = [h for h in self.holds if h.status == Status.ACTIVE and h.expires_at > self.now]
        # Mostly a hold that can still be used; sometimes any (captured, voided, expired).
        pool = usable if usable and data.draw(st.booleans(), label="usable") else self.holds
        hold = data.draw(st.sampled_from(pool), label="hold")
        # All of it, part of it, or a little more than it holds.
        points = data.draw(
            st.integers(min_value=1, max_value=hold.points + 10) | st.none(), label="points"
        )
        if capture:

            def run(key, other=False):
                asked = (1 if points is None else None) if other else points
                return factories.capture(hold.obj, asked, idempotency_key=key, now=self.now)

        else:

            def run(key, other=False):
                return factories.void(hold.obj, idempotency_key=key, now=self.now)

        if hold.status != Status.ACTIVE or hold.expires_at <= self.now:
            refusal = ErrorCode.HOLD_NOT_ACTIVE
        elif capture and points is not None and points > hold.points:
            refusal = ErrorCode.INVALID
        else:
            refusal = None
        if self.attempt(refusal, run, m=hold.member, can_conflict=capture) is None:
            return
        if capture:
            hold.status = Status.CAPTURED
            self.wallets[hold.member].balance -= hold.points if points is None else points
        else:
            hold.status = Status.VOIDED

    def reverse(self, data):
        reversible = [
            t
            for t in self.txns
            if t.kind in (Kind.EARN, Kind.BURN, Kind.DONATE) and abs(t.member_points) > t.reversed
        ]
        # Mostly something reversible; sometimes anything (a reversal, an expiry, all reversed).
        pool = reversible if reversible and data.draw(st.booleans(), label="usable") else self.txns
        original = data.draw(st.sampled_from(pool), label="transaction")
        points = data.draw(SOME_POINTS, label="points")

        def run(key, other=False):
            asked = (1 if points is None else None) if other else points
            return factories.reverse(original.obj, asked, idempotency_key=key, now=self.now)

        left = abs(original.member_points) - original.reversed
        if original.kind not in (Kind.EARN, Kind.BURN, Kind.DONATE):
            refusal = ErrorCode.INVALID_STATE  # reversals and expiries
        elif left <= 0:
            refusal = ErrorCode.ALREADY_REVERSED
        elif points is not None and points > left:
            refusal = ErrorCode.INVALID
        else:
            refusal = None
        amount = left if points is None else points
        # An earn's points that already expired come back out of breakage, not the wallet.
        from_breakage = (
            self.breakage_share(original, amount)
            if refusal is None and original.kind == Kind.EARN
            else 0
        )
        if self.attempt(refusal, run, m=original.member) is None:
            return
        direction = 1 if original.member_points > 0 else -1
        original.reversed += amount
        original.from_breakage += from_breakage
        wallet = self.wallets[original.member]
        wallet.balance -= direction * amount - from_breakage
        wallet.earn_reversed |= original.kind == Kind.EARN

    def time_passes(self, data):
        # Time moves on, and the periodic jobs may run: hold expiry, then point expiry. A hold
        # that is due but not yet expired by the job is released by the member's next spend.
        self.now += data.draw(TIME_STEPS, label="step")
        jobs = data.draw(st.sampled_from(["points", "none", "both", "holds"]), label="jobs")
        if jobs in ("both", "holds"):
            self.expire_holds()
        if jobs in ("both", "points"):
            self.expire_points()

    def expire_holds(self):
        expired_holds = services.holds_expire_due(now=self.now)
        due_holds = [
            h for h in self.holds if h.status == Status.ACTIVE and h.expires_at <= self.now
        ]
        assert sorted(expired_holds) == sorted(h.obj.pk for h in due_holds)
        for hold in due_holds:
            hold.status = Status.EXPIRED

    def expire_points(self):
        due = {
            m: PointLot.objects.filter(
                member=member, remaining__gt=0, expires_at__lte=self.now
            ).aggregate(total=Sum("remaining"))["total"]
            or 0
            for m, member in enumerate(self.members)
        }
        last_id = LedgerTransaction.objects.order_by("-id").values_list("id", flat=True).first()
        total = services.points_expire_due(now=self.now)

        expiries = LedgerTransaction.objects.filter(kind=Kind.EXPIRE, id__gt=last_id or 0)
        by_member = {txn.member_id: txn for txn in expiries}
        assert total == -sum(txn.member_points for txn in by_member.values())
        for m, member in enumerate(self.members):
            wallet = self.wallets[m]
            # Due points expire, except those the wallet's holds still reserve.
            expected = min(due[m], max(wallet.balance - self.stored_held(m), 0))
            txn = by_member.get(member.pk)
            assert (-txn.member_points if txn else 0) == expected, (m, due[m], wallet)
            if txn is not None:
                wallet.balance -= expected
                self.txns.append(Txn(txn, m, txn.kind, txn.member_points))

    def send_again(self, data):
        call = data.draw(st.sampled_from(self.calls), label="call")
        if call.can_conflict and data.draw(st.booleans(), label="other payload"):
            # The same key with another payload is refused, nothing written.
            factories.assert_refused(
                ErrorCode.IDEMPOTENCY_CONFLICT, lambda: call.run(call.key, True)
            )
            return
        # A retry with the same key and payload returns the first result, nothing written.
        before = factories.ledger_state()
        again = call.run(call.key)
        assert again.pk == call.pk
        assert factories.ledger_state() == before

    def refused(self, data):
        how = data.draw(st.sampled_from(["earn", "burn", "hold", "donate"]), label="how")
        m = data.draw(MEMBERS, label="member")
        bad = data.draw(
            st.sampled_from([0, -7, 2.5, "5", None, "too many", "overspend"]), label="points"
        )
        if bad == "overspend":
            # More than the member can spend (an empty or negative wallet included).
            how = "burn" if how == "earn" else how
            extra = data.draw(st.integers(min_value=1, max_value=50), label="extra")
            points = max(self.wallets[m].balance - self.active_held(m), 0) + extra
            refusal = ErrorCode.INSUFFICIENT_POINTS
        elif bad == "too many":
            points = settings.COALITION["MAX_POINTS_PER_TRANSACTION"] + 1
            refusal = ErrorCode.LIMIT_EXCEEDED
        else:
            points, refusal = bad, ErrorCode.INVALID
        member, partner = self.members[m], self.partners[0]
        calls = {
            "earn": lambda: factories.earn(member, partner, points, now=self.now),
            "burn": lambda: factories.burn(member, partner, points, now=self.now),
            "hold": lambda: factories.hold(member, partner, points, now=self.now),
            "donate": lambda: factories.donate(member, self.charity, points, now=self.now),
        }
        factories.assert_refused(refusal, calls[how])

    # ------------------------------------------------------------------ invariants

    @invariant()
    def ledger_is_intact(self):
        report = selectors.ledger_check()
        assert report.ok, report.problems

    @invariant()
    def wallets_match_the_model(self):
        stored = {
            account.member_id: account
            for account in Account.objects.filter(kind=Account.Kind.MEMBER_WALLET)
        }
        for m, member in enumerate(self.members):
            wallet, row = self.wallets[m], stored[member.pk]
            assert (row.balance, row.held) == (wallet.balance, self.stored_held(m)), m
            if row.balance < 0 or row.balance < row.held:
                # Only reversing a spent earn may leave a wallet owing points.
                assert wallet.earn_reversed, (m, row.balance, row.held)
        statuses = dict(RedemptionHold.objects.values_list("pk", "status"))
        assert statuses == {hold.obj.pk: hold.status for hold in self.holds}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_random_ledger_operations_keep_every_invariant(settings):
    # Given 3 members, 2 partners and a charity on a fresh ledger (per example), and holds
    # that last 5 days
    settings.COALITION = {**settings.COALITION, "HOLD_TTL_MINUTES": HOLD_TTL_MINUTES}
    # When hypothesis runs random sequences of operations against it
    # Then after every step the ledger checks out and matches the model (see the invariants)
    run_state_machine_as_test(
        LedgerMachine,
        settings=hypothesis_settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            database=None,
            # Shrinking replays whole sequences against the database and can take minutes; a
            # failure prints its full sequence of steps instead.
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )

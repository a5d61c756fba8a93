"""The run identity on random ledgers, against an independent oracle.

For random activity over three consecutive runs (earns with operator bonuses, burns,
donations, sponsor matches, partial reversals, expiries, adjustments, terms changes, a
suspended charity, failed lines carried forward), the oracle prices every claimed entry in
Python, transaction by transaction, with `terms_at`, and checks:

- each line's exact amount, rounded amount, carried-in amount, net and direction;
- the outstanding points against the wallets' own balances;
- the float of points against its definition (outstanding x carrying price, rounded);
- collected - paid out == operator revenue + float_end - float_start, to the cent.
"""

import random
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import pytest
from django.db.models import Sum

from charity.models import Charity
from coalition import services as ledger
from coalition.models import Account, LedgerTransaction
from partners.selectors import terms_at
from partners.services import terms_set
from settlement import selectors, services
from settlement.models import SettlementClaim, SettlementLine
from tests import factories

from .conftest import days, make_partner

pytestmark = pytest.mark.django_db

D = Decimal
CENT = D("0.01")
MINIMUM = D("10.00")


def cents(value) -> Decimal:
    if isinstance(value, Fraction):
        value = D(value.numerator) / D(value.denominator)
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


class Oracle:
    """Settlement recomputed transaction by transaction."""

    def __init__(self, programme):
        self.programme = programme
        self.carried: dict[tuple[str, int], Decimal] = {}
        self.outstanding = 0
        self.points_float = D(0)

    def price_run(self, run):
        exact: dict[tuple[str, int], Decimal] = {}
        issuance = D(0)
        points = {"issued": 0, "operator": 0, "redeemed": 0, "donated": 0, "expired": 0}
        claimed = SettlementClaim.objects.filter(run=run).values_list("transaction_id", flat=True)
        for txn in LedgerTransaction.objects.filter(pk__in=list(claimed)).select_related(
            "reversal_of"
        ):
            origin = txn.reversal_of or txn
            is_match = origin.kind == LedgerTransaction.Kind.MATCH
            for entry in txn.entries.select_related("account", "account__partner"):
                account = entry.account
                if account.kind == Account.Kind.PARTNER_ISSUED:
                    price = terms_at(partner=account.partner, moment=origin.created_at)
                    amount = entry.points * price.issuance_price
                    key = ("partner", account.partner_id)
                    exact[key] = exact.get(key, D(0)) + amount
                    if not is_match:
                        issuance -= amount
                        points["issued"] -= entry.points
                elif account.kind == Account.Kind.PARTNER_REDEEMED:
                    price = terms_at(partner=account.partner, moment=origin.created_at)
                    key = ("partner", account.partner_id)
                    exact[key] = exact.get(key, D(0)) + entry.points * price.redemption_price
                    points["redeemed"] += entry.points
                elif account.kind == Account.Kind.CHARITY_RECEIVED:
                    key = ("charity", account.charity_id)
                    amount = entry.points * self.programme.donation_price
                    exact[key] = exact.get(key, D(0)) + amount
                    if not is_match:
                        points["donated"] += entry.points
                elif account.kind == Account.Kind.BREAKAGE:
                    points["expired"] += entry.points
                elif account.kind != Account.Kind.MEMBER_WALLET:
                    points["operator"] -= entry.points
        return exact, issuance, points

    def check(self, run):
        exact, issuance, points = self.price_run(run)
        keys = set(exact) | {k for k, v in self.carried.items() if v}
        lines = {
            (
                ("partner", line.partner_id) if line.partner_id else ("charity", line.charity_id)
            ): line
            for line in run.lines.all()
        }
        assert set(lines) == keys
        for key, line in lines.items():
            value = exact.get(key, D(0))
            carried_in = self.carried.get(key, D(0))
            assert line.exact_amount == value, key
            assert line.rounded_amount == cents(value), key
            assert line.carried_in_amount == carried_in, key
            net = cents(value) + carried_in
            assert line.net_amount == net, key
            held = key[0] == "charity" and line.charity.status != Charity.Status.VERIFIED
            if held or abs(net) < MINIMUM or (key[0] == "charity" and net < 0):
                expected = "carry_forward"
            else:
                expected = "pay_out" if net > 0 else "collect"
            assert line.direction == expected, key
        self.carried = {}  # every carried amount was taken into this run

        # Outstanding points: the wallets hold exactly what the runs say.
        inflow = points["issued"] + points["operator"]
        outflow = points["redeemed"] + points["donated"] + points["expired"]
        wallets = Account.objects.filter(kind=Account.Kind.MEMBER_WALLET).aggregate(
            total=Sum("balance")
        )["total"]
        assert run.outstanding_points_end == self.outstanding + inflow - outflow == wallets
        # The float of points by its definition.
        available = self.outstanding + inflow
        carrying = (
            (Fraction(self.points_float) + Fraction(issuance)) / available
            if available > 0
            else Fraction(0)
        )
        assert run.points_float_start == self.points_float
        assert run.points_float_end == cents(carrying * wallets)
        self.outstanding, self.points_float = wallets, run.points_float_end

        # The identity, to the cent.
        assert run.total_collected - run.total_paid_out == (
            run.operator_revenue + run.float_end - run.float_start
        )
        assert selectors.run_totals_tie(run=run)
        for value in (run.operator_revenue, run.rounding_revenue, run.float_end):
            assert value == cents(value)

    def after_execution(self, run):
        for line in run.lines.filter(status=SettlementLine.Status.CARRIED_FORWARD):
            key = ("partner", line.partner_id) if line.partner_id else ("charity", line.charity_id)
            self.carried[key] = self.carried.get(key, D(0)) + line.net_amount


def random_activity(rng, *, partners, charities, members, staff, start, span, post):
    moment = start
    history: list[LedgerTransaction] = []
    for _ in range(rng.randint(25, 40)):
        moment += timedelta(seconds=span.total_seconds() / 45)
        member = rng.choice(members)
        wallet = factories.wallet(member)
        spendable = max(wallet.balance - wallet.held, 0)
        roll = rng.random()
        try:
            if roll < 0.35 or spendable < 50:
                history.append(
                    post.earn(
                        member,
                        rng.choice(partners),
                        rng.randint(1, 4_000),
                        moment,
                        operator_points=rng.choice([0, 0, rng.randint(1, 300)]),
                        kind=rng.choice(["earn", "bonus"]),
                    )
                )
            elif roll < 0.6:
                history.append(
                    post.burn(member, rng.choice(partners), rng.randint(1, spendable), moment)
                )
            elif roll < 0.7:
                history.append(
                    post.donate(member, rng.choice(charities), rng.randint(1, spendable), moment)
                )
            elif roll < 0.75:
                post.match(rng.choice(partners), rng.choice(charities), rng.randint(1, 900), moment)
            elif roll < 0.88 and history:
                original = rng.choice(history)
                remaining = ledger.reversible_points(original)
                if remaining > 0:
                    post.reverse(original, rng.randint(1, remaining), moment)
            elif roll < 0.93:
                ledger.points_adjust(
                    staff_user=staff,
                    member=member,
                    points=rng.choice([rng.randint(1, 500), -rng.randint(1, max(spendable, 1))]),
                    reason="goodwill",
                    idempotency_key=factories.key("adjust"),
                    now=moment,
                )
            else:
                post.expire(moment)
        except ledger.CoalitionError:
            pass  # a refused write (e.g. an overspend) is part of random life
    return moment


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_identity_holds_on_random_ledgers(
    seed, settlement_programme, base_time, finance, approver, post,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    rng = random.Random(seed)
    start = base_time
    partners = [
        make_partner(
            f"R{seed}P{i}",
            issuance=str(D(rng.randint(9_000, 14_000)) / 1_000_000),
            redemption=str(D(rng.randint(6_000, 8_999)) / 1_000_000),
            valid_from=start - days(1),
        )
        for i in range(3)
    ]
    charities = [factories.CharityFactory(), factories.CharityFactory()]
    members = [factories.member() for _ in range(6)]
    oracle = Oracle(settlement_programme)
    expired = 0
    for period in range(3):
        # Some partner's prices change inside each period.
        terms_set(
            partner=rng.choice(partners),
            issuance_price=str(D(rng.randint(9_000, 14_000)) / 1_000_000),
            redemption_price=str(D(rng.randint(6_000, 8_999)) / 1_000_000),
            valid_from=start + days(20 * period + 10),
        )
        if period == 1:
            Charity.objects.filter(pk=charities[1].pk).update(status=Charity.Status.SUSPENDED)
        if period == 2:
            Charity.objects.filter(pk=charities[1].pk).update(status=Charity.Status.VERIFIED)
        random_activity(
            rng, partners=partners, charities=charities, members=members, staff=approver,
            start=start + days(20 * period), span=days(19), post=post,
        )  # fmt: skip
        post.expire(start + days(20 * (period + 1)) - timedelta(hours=1))  # the nightly sweep
        run = services.run_create(period_end=start + days(20 * (period + 1)), created_by=finance)
        oracle.check(run)
        services.run_approve(run=run, approved_by=approver)
        with django_capture_on_commit_callbacks(execute=True):
            services.run_execute(run=run, started_by=finance)
        for line in run.lines.filter(status=SettlementLine.Status.FAILED):
            services.line_carry_forward(line=line, user=approver)  # no Stripe accounts here
        run.refresh_from_db()
        assert run.status == "completed"
        oracle.after_execution(run)
        expired += run.expired_points
    assert expired > 0, "the random ledger should expire some points"

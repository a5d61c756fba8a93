"""Settlement runs: the worked month to the cent, the lifecycle and its guards, carry
forward, held charity money, statements. No Stripe here: partners without Stripe accounts
fail their lines before any call, which is all a lifecycle test needs."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from charity.models import Charity
from coalition.errors import ErrorCode
from coalition.models import LedgerTransaction
from partners.services import terms_set
from settlement import selectors, services
from settlement.errors import CoalitionError
from settlement.models import (
    SettlementClaim,
    SettlementLine,
    SettlementLineComponent,
    SettlementRun,
    SettlementTransition,
)
from tests import factories

from .conftest import days, make_partner

pytestmark = pytest.mark.django_db

D = Decimal


def line_of(run, counterparty) -> SettlementLine:
    if isinstance(counterparty, Charity):
        return run.lines.get(charity=counterparty)
    return run.lines.get(partner=counterparty)


def components(line) -> dict:
    return {
        (c.kind, c.price): (c.points, c.amount)
        for c in SettlementLineComponent.objects.filter(line=line)
    }


def execute(run, user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=user)
    run.refresh_from_db()
    return run


@pytest.fixture
def month(settlement_programme, base_time, post):
    """The worked month (see test_worked_month_to_the_cent)."""
    t0 = base_time
    a = make_partner("ALPHA", issuance="0.010", redemption="0.008", valid_from=t0 - days(40))
    b = make_partner("BETA", issuance="0.011", redemption="0.008333", valid_from=t0 - days(40))
    c = make_partner("GAMMA", issuance="0.0105", redemption="0.008", valid_from=t0 - days(40))
    # Alpha's new terms from tomorrow.
    terms_set(partner=a, issuance_price="0.012", redemption_price="0.009", valid_from=t0 + days(1))
    charity = factories.CharityFactory(name="Kind Trees")
    m1, m2, m3 = factories.member(), factories.member(), factories.member()

    post.earn(m3, a, 1_000, t0 - days(40) + timedelta(hours=1))  # 1
    earn_m1 = post.earn(m1, a, 10_000, t0 - days(20))  # 2
    post.earn(m2, a, 5_000, t0 - days(19))  # 3
    post.earn(m2, a, 100, t0 - days(18), operator_points=50, kind="bonus")  # 3b
    burn_m1 = post.burn(m1, b, 3_000, t0 - days(15))  # 4
    post.burn(m2, b, 2_000, t0 - days(10))  # 5
    assert post.expire(t0 - days(3)) == 1_000  # 6: m3's lot, a month old
    post.donate(m1, charity, 1_500, t0 - days(2))  # 7
    post.match(c, charity, 1_500, t0 - days(2) + timedelta(hours=1))  # 8
    post.earn(m1, a, 4_321, t0 + days(2))  # 9: Alpha's new terms
    post.reverse(earn_m1, 2_000, t0 + days(3))  # 10: priced at the original's terms
    post.burn(m2, a, 1_000, t0 + days(4))  # 11: new terms
    post.reverse(burn_m1, 500, t0 + days(5))  # 12
    post.earn(m2, c, 350, t0 + days(6))  # 13
    post.burn(m2, c, 1_500, t0 + days(7))  # 14
    return {"a": a, "b": b, "c": c, "charity": charity, "end": t0 + days(25), "t0": t0}


def test_worked_month_to_the_cent(month, finance):
    """Three partners, one charity, one month; Alpha's terms change on day 1.

    Terms (issuance / redemption per point): Alpha 0.010 / 0.008, from day 1 0.012 / 0.009;
    Beta 0.011 / 0.008333; Gamma 0.0105 / 0.008. Donation price 0.01. Minimum 10.00.

    Alpha (collects)
      issued, old terms   1,000 + 10,000 + 5,000 + 100 (bonus) = 16,100 x 0.010 = -161.000
      issued, new terms   4,321 x 0.012                                       =  -51.852
      earn reversed         2,000 x 0.010 (the original's terms)              =  +20.000
      redeemed, new terms   1,000 x 0.009                                     =   +9.000
      exact -183.852 -> rounded -183.85 (remainder -0.002): COLLECT 183.85
    Beta (pays out)
      redeemed   3,000 + 2,000 = 5,000 x 0.008333 = +41.6650
      reversed   500 x 0.008333                   =  -4.1665
      exact 37.4985 -> 37.50 (remainder -0.0015): PAY_OUT 37.50
    Gamma (carries forward)
      issued 350 x 0.0105 = -3.675; match 1,500 x 0.0105 = -15.75; redeemed 1,500 x 0.008 = +12
      exact -7.425 -> -7.42 (half-even; remainder -0.005): below 10.00, CARRY_FORWARD -7.42
    Kind Trees: donated 1,500 x 0.01 + matched 1,500 x 0.01 = 30.00: PAY_OUT 30.00

    Totals: paid out 37.50 + 30.00 = 67.50; collected 183.85; carried -7.42.
    Points: issued 18,421 + 350 = 18,771, operator-funded 50 (in 18,821); redeemed 7,000,
    donated 1,500, expired 1,000 (out 9,500); outstanding 0 -> 9,321.
    Carrying price c = (0 + issuance 196.527) / 18,821 = 0.0104419000053...
    Float of points 9,321 x c = 97.3289... -> 97.33
    Spread  c x (7,000 + 1,500) - 58.4985 - 15.00 = 15.2576... -> 15.26
    Breakage c x 1,000 = 10.4419... -> 10.44;  match spread 15.75 - 15.00 = 0.75
    Rounding: lines -0.0085, plus the sub-cent parts of the four rounded figures = -0.01
    Operator revenue 15.26 + 10.44 + 0.75 - 0.01 = 26.44
    Float 0 -> 97.33 - 7.42 = 89.91.  Check: 183.85 - 67.50 = 116.35 = 26.44 + 89.91.
    """
    run = services.run_create(period_end=month["end"], created_by=finance)

    alpha = line_of(run, month["a"])
    assert components(alpha) == {
        ("issued", D("0.010")): (-16_100, D("-161.000")),
        ("issued", D("0.012")): (-4_321, D("-51.852")),
        ("issued_reversed", D("0.010")): (2_000, D("20.000")),
        ("redeemed", D("0.009")): (1_000, D("9.000")),
    }
    assert (alpha.issued_points, alpha.issued_reversed_points, alpha.redeemed_points) == (
        18_421,
        2_000,
        1_000,
    )
    assert alpha.exact_amount == D("-183.852")
    assert alpha.net_amount == D("-183.85")
    assert alpha.rounding_remainder == D("-0.002")
    assert (alpha.direction, alpha.status) == ("collect", "pending")

    beta = line_of(run, month["b"])
    assert components(beta) == {
        ("redeemed", D("0.008333")): (5_000, D("41.665")),
        ("redeemed_reversed", D("0.008333")): (-500, D("-4.1665")),
    }
    assert (beta.redeemed_points, beta.redeemed_reversed_points) == (4_500, 500)
    assert (beta.exact_amount, beta.net_amount) == (D("37.4985"), D("37.50"))
    assert (beta.direction, beta.status) == ("pay_out", "pending")

    gamma = line_of(run, month["c"])
    assert components(gamma) == {
        ("issued", D("0.0105")): (-350, D("-3.675")),
        ("match", D("0.0105")): (-1_500, D("-15.75")),
        ("redeemed", D("0.008")): (1_500, D("12.000")),
    }
    assert (gamma.exact_amount, gamma.net_amount) == (D("-7.425"), D("-7.42"))
    assert (gamma.direction, gamma.status) == ("carry_forward", "carried_forward")
    assert "minimum" in gamma.hold_reason

    trees = line_of(run, month["charity"])
    assert (trees.donated_points, trees.matched_points) == (1_500, 1_500)
    assert (trees.donation_amount, trees.match_amount) == (D("15.00"), D("15.00"))
    assert (trees.net_amount, trees.direction) == (D("30.00"), "pay_out")

    assert run.claimed_transactions == LedgerTransaction.objects.count() == 15
    assert (run.total_paid_out, run.total_collected, run.carried_forward) == (
        D("67.50"),
        D("183.85"),
        D("-7.42"),
    )
    assert (run.issued_points, run.operator_funded_points, run.redeemed_points) == (
        18_771,
        50,
        7_000,
    )
    assert (run.donated_points, run.matched_points, run.expired_points) == (1_500, 1_500, 1_000)
    assert (run.outstanding_points_start, run.outstanding_points_end) == (0, 9_321)
    assert run.points_float_end == D("97.33")
    assert run.spread_revenue == D("15.26")
    assert run.breakage_revenue == D("10.44")
    assert run.match_revenue == D("0.75")
    assert run.rounding_revenue == D("-0.01")
    assert run.operator_revenue == D("26.44")
    assert (run.float_start, run.float_end) == (D("0"), D("89.91"))
    assert run.total_collected - run.total_paid_out == run.operator_revenue + run.float_change
    assert selectors.run_totals_tie(run=run)


def test_the_next_run_takes_the_carried_amount_and_the_float(
    month, finance, approver, post, django_capture_on_commit_callbacks
):
    # Given the worked month settled (its lines fail: nobody has a Stripe account)
    run = services.run_create(period_end=month["end"], created_by=finance)
    services.run_approve(run=run, approved_by=approver)
    run = execute(run, finance, django_capture_on_commit_callbacks)
    assert run.status == SettlementRun.Status.PARTIALLY_FAILED
    alpha = line_of(run, month["a"])
    assert (alpha.status, alpha.failure_code) == ("failed", "customer_missing")
    # ...and staff carry Alpha's failed collection forward
    services.line_carry_forward(line=alpha, user=approver)
    for line in run.lines.filter(status="failed"):
        services.line_carry_forward(line=line, user=approver)
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.COMPLETED

    # When Gamma redeems 2,000 more points and the next run is made
    member = factories.member()
    post.earn(member, month["a"], 3_000, month["end"] + days(1))
    post.burn(member, month["c"], 2_000, month["end"] + days(2))
    second = services.run_create(period_end=month["end"] + days(30), created_by=finance)

    # Then Gamma's line carries its -7.42 in: 2,000 x 0.008 - 7.42 = 8.58, still carried
    gamma = line_of(second, month["c"])
    assert gamma.carried_in_amount == D("-7.42")
    assert gamma.rounded_amount == D("16.00")
    assert (gamma.net_amount, gamma.direction) == (D("8.58"), "carry_forward")
    # Alpha's failed -183.85 joins its 3,000 x 0.012 = -36.00
    alpha2 = line_of(second, month["a"])
    assert alpha2.carried_in_amount == D("-183.85")
    assert (alpha2.net_amount, alpha2.direction) == (D("-219.85"), "collect")
    assert set(SettlementLine.objects.filter(carried_to_run=second).values_list("run", flat=True))
    # the float and the outstanding points continue from the first run
    assert second.outstanding_points_start == 9_321
    assert second.points_float_start == D("97.33")
    # carried in: Gamma -7.42, Alpha -183.85, Beta +37.50 and Kind Trees +30.00 (both failed)
    assert second.carried_in == D("-123.77")
    assert second.float_start == D("97.33") - D("123.77")
    assert selectors.run_totals_tie(run=second)


def test_segregation_of_duties_the_creator_cannot_approve(month, finance, approver):
    run = services.run_create(period_end=month["end"], created_by=finance)

    with pytest.raises(CoalitionError) as refused:
        services.run_approve(run=run, approved_by=finance)

    assert refused.value.code == ErrorCode.PERMISSION_DENIED
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.DRAFT and run.approved_by is None
    services.run_approve(run=run, approved_by=approver)
    run.refresh_from_db()
    assert (run.status, run.approved_by) == (SettlementRun.Status.APPROVED, approver)


def test_non_staff_cannot_create_or_approve(month, finance):
    from django.contrib.auth import get_user_model

    outsider = get_user_model().objects.create_user(username="outsider", password="x-Str0ng-1")
    with pytest.raises(CoalitionError) as refused:
        services.run_create(period_end=month["end"], created_by=outsider)
    assert refused.value.code == ErrorCode.PERMISSION_DENIED
    assert not SettlementRun.objects.exists() and not SettlementClaim.objects.exists()
    run = services.run_create(period_end=month["end"], created_by=finance)
    with pytest.raises(CoalitionError):
        services.run_approve(run=run, approved_by=outsider)


def test_every_transition_is_recorded_with_who_and_when(
    month, finance, approver, django_capture_on_commit_callbacks
):
    run = services.run_create(period_end=month["end"], created_by=finance)
    services.run_approve(run=run, approved_by=approver)
    execute(run, approver, django_capture_on_commit_callbacks)

    history = list(
        SettlementTransition.objects.filter(run=run, line__isnull=True).values_list(
            "from_status", "to_status", "actor", "actor_label"
        )
    )
    assert history == [
        ("", "draft", finance.pk, f"staff:{finance.pk}"),
        ("draft", "approved", approver.pk, f"staff:{approver.pk}"),
        ("approved", "executing", approver.pk, f"staff:{approver.pk}"),
        ("executing", "partially_failed", None, "system:execution"),
    ]
    assert all(t.created_at for t in SettlementTransition.objects.filter(run=run))
    failed = SettlementTransition.objects.filter(run=run, line__isnull=False, to_status="failed")
    assert failed.count() == 3  # Alpha, Beta, Kind Trees: no Stripe accounts


def test_illegal_transitions_are_refused(month, finance, approver):
    run = services.run_create(period_end=month["end"], created_by=finance)
    for call in (
        lambda: services.run_execute(run=run, started_by=approver),  # not approved yet
    ):
        with pytest.raises(CoalitionError) as refused:
            call()
        assert refused.value.code == ErrorCode.INVALID_STATE
    services.run_approve(run=run, approved_by=approver)
    for call in (
        lambda: services.run_approve(run=run, approved_by=approver),
        lambda: services.run_discard(run=run, discarded_by=finance),
        lambda: services.line_retry(line=run.lines.first(), user=finance),
    ):
        with pytest.raises(CoalitionError) as refused:
            call()
        assert refused.value.code == ErrorCode.INVALID_STATE


def test_only_one_run_is_open_at_a_time(month, finance):
    services.run_create(period_end=month["end"], created_by=finance)

    with pytest.raises(CoalitionError) as refused:
        services.run_create(period_end=month["end"] + days(1), created_by=finance)

    assert refused.value.code == ErrorCode.INVALID_STATE
    assert SettlementRun.objects.count() == 1


def test_the_database_itself_refuses_a_second_open_run(month, finance):
    services.run_create(period_end=month["end"], created_by=finance)

    # Bypassing the service: the partial unique index refuses it.
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO settlement_run (reference, status, period_end, currency, created_by_id,"
            " created_at, claimed_transactions, issued_points, operator_funded_points,"
            " redeemed_points, donated_points, matched_points, expired_points,"
            " outstanding_points_start, outstanding_points_end, issuance_amount, match_amount,"
            " redemption_amount, donation_amount, carrying_price, total_paid_out,"
            " total_collected, carried_in, carried_forward, spread_revenue, match_revenue,"
            " breakage_revenue, rounding_revenue, operator_revenue, points_float_start,"
            " points_float_end, float_start, float_end) VALUES (%s, 'approved', %s, 'USD', %s,"
            " %s, 0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0)",
            ["0" * 32, month["end"], finance.pk, month["end"]],
        )


def test_a_transaction_is_claimed_by_one_run_only(month, finance):
    run = services.run_create(period_end=month["end"], created_by=finance)
    txn = LedgerTransaction.objects.first()

    with pytest.raises(IntegrityError), transaction.atomic():
        SettlementClaim.objects.create(transaction=txn, run=run)


def test_discarding_a_draft_returns_its_transactions(month, finance, approver):
    first = services.run_create(period_end=month["end"], created_by=finance)
    assert first.claimed_transactions == 15

    services.run_discard(run=first, discarded_by=approver, reason="wrong cut-off")

    first.refresh_from_db()
    assert first.status == SettlementRun.Status.DISCARDED
    assert not SettlementClaim.objects.exists() and not first.lines.exists()
    assert first.transitions.last().note == "wrong cut-off"
    second = services.run_create(period_end=month["end"], created_by=finance)
    assert second.claimed_transactions == 15
    assert second.total_collected == D("183.85")


def test_transactions_after_the_period_end_wait_for_the_next_run(
    month, finance, post, approver, django_capture_on_commit_callbacks
):
    member = factories.member()
    late = post.earn(member, month["a"], 500, month["end"] + timedelta(seconds=1))
    run = services.run_create(period_end=month["end"], created_by=finance)
    assert not SettlementClaim.objects.filter(transaction=late).exists()
    services.run_approve(run=run, approved_by=approver)
    execute(run, approver, django_capture_on_commit_callbacks)

    second = services.run_create(period_end=month["end"] + days(1), created_by=finance)

    assert SettlementClaim.objects.get(transaction=late).run == second
    assert second.claimed_transactions == 1


def test_missing_terms_refuse_the_run(settlement_programme, base_time, post, finance):
    partner = make_partner("LATE", issuance="0.01", redemption="0.008", valid_from=base_time)
    post.earn(factories.member(), partner, 100, base_time - days(1))  # before its terms

    with pytest.raises(CoalitionError) as refused:
        services.run_create(period_end=base_time + days(1), created_by=finance)

    assert refused.value.code == ErrorCode.INVALID_STATE and "LATE" in refused.value.message
    assert not SettlementRun.objects.exists() and not SettlementClaim.objects.exists()


def test_a_partner_in_another_currency_is_refused(settlement_programme, base_time, post, finance):
    partner = make_partner("EURO", issuance="0.01", redemption="0.008", valid_from=base_time)
    partner.currency = "EUR"
    partner.save()
    post.earn(factories.member(), partner, 100, base_time)

    with pytest.raises(CoalitionError) as refused:
        services.run_create(period_end=base_time + days(1), created_by=finance)

    assert refused.value.code == ErrorCode.CURRENCY_MISMATCH


def test_a_suspended_charity_has_its_money_held(month, finance):
    Charity.objects.filter(pk=month["charity"].pk).update(status=Charity.Status.SUSPENDED)

    run = services.run_create(period_end=month["end"], created_by=finance)

    held = line_of(run, month["charity"])
    assert (held.net_amount, held.direction, held.status) == (
        D("30.00"),
        "carry_forward",
        "carried_forward",
    )
    assert "suspended" in held.hold_reason
    assert run.carried_forward == D("-7.42") + D("30.00")
    assert selectors.run_totals_tie(run=run)


def test_the_partner_statement_rows_add_up_to_the_net(month, finance):
    run = services.run_create(period_end=month["end"], created_by=finance)
    alpha = line_of(run, month["a"])

    rows = services.statement_rows(line=alpha)

    header, *body = rows
    assert header[:4] == ["run", "period_end", "counterparty", "row"]
    kinds = [row[3] for row in body]
    assert kinds.count("issued") == 2  # at 0.010 and at 0.012
    assert {"issued_reversed", "redeemed", "carried_forward_in", "net"} <= set(kinds)
    priced = sum(
        D(row[7]) for row in body if row[3] not in {"subtotal", "net", "carried_forward_out"}
    )
    net = next(D(row[7]) for row in body if row[3] == "net")
    assert priced == net == D("-183.85")
    assert any("0.012" in row[4] for row in body)


def test_zero_activity_gives_an_empty_run(
    settlement_programme, finance, approver, django_capture_on_commit_callbacks, base_time
):
    run = services.run_create(period_end=base_time, created_by=finance)
    assert run.claimed_transactions == 0 and not run.lines.exists()
    services.run_approve(run=run, approved_by=approver)
    run = execute(run, approver, django_capture_on_commit_callbacks)
    assert run.status == SettlementRun.Status.COMPLETED

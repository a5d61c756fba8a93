"""Settlement in currencies whose Stripe units are not ISO 4217's minor units, against the
emulator over HTTP: an ISK pay-out and collection reach Stripe as 100 per króna (not 100
times too little); a KWD line is rounded to Stripe's 0.01 step (the remainder is rounding
revenue), and an amount Stripe cannot move exactly fails with its reason before anything
is sent for it; a payout Stripe reports in ISK is recorded at its value;
reconciliation agrees with all of it."""

from decimal import Decimal

import pytest

from coalition import services as ledger
from partners.services import terms_set
from settlement import selectors, services
from settlement import stripe_gateway as gateway
from settlement.models import ConnectedPayout, SettlementLine, SettlementRun
from tests import factories
from tests.settlement.conftest import days
from tests.settlement.test_webhooks import event_body, post, webhook_secret  # noqa: F401

pytestmark = pytest.mark.django_db

Status = SettlementLine.Status


def month_in(currency, *, stripe_bed, base_time, post, finance, approver, issuance, redemption):
    """An approved run in `currency`: ISSUER issued 20,000 points (collected from its card),
    REDEEMER redeemed 5,000 (paid out to its connected account)."""
    programme = ledger.programme_get()
    programme.min_redemption_points = 1
    programme.expiry_months = 1
    programme.currency = currency
    programme.save()
    t0 = base_time
    partners = {}
    for code, stripe_ids in [
        ("ISSUER", {"stripe_customer_id": stripe_bed.customer()}),
        ("REDEEMER", {"stripe_account_id": stripe_bed.account()}),
    ]:
        partners[code] = factories.PartnerFactory(code=code, currency=currency, **stripe_ids)
        terms_set(
            partner=partners[code],
            issuance_price=Decimal(issuance),
            redemption_price=Decimal(redemption),
            valid_from=t0 - days(30),
        )
    member = factories.member()
    post.earn(member, partners["ISSUER"], 20_000, t0 - days(5))
    post.burn(member, partners["REDEEMER"], 5_000, t0 - days(4))
    run = services.run_create(period_end=t0, created_by=finance)
    services.run_approve(run=run, approved_by=approver)
    return run, partners


@pytest.fixture
def month(stripe_bed, base_time, post, finance, approver):
    def make(currency, *, issuance, redemption):
        return month_in(
            currency, stripe_bed=stripe_bed, base_time=base_time, post=post, finance=finance,
            approver=approver, issuance=issuance, redemption=redemption,
        )  # fmt: skip

    return make


def execute(run, finance, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)
    run.refresh_from_db()
    return {line.partner.code: line for line in run.lines.select_related("partner")}


@pytest.mark.parametrize(
    "currency,issuance,redemption,owed,collected,stripe_payout,stripe_collection",
    [
        # 5,000 × 0.8 = 4,000 ISK: two decimals in Stripe's API, 100 per króna (USD, JPY
        # and KWD, whose Stripe units are ISO's, are in tests/coalition/test_money.py)
        ("ISK", "1", "0.8", "4000", "20000", 400000, 2000000),
    ],
)
def test_stripe_is_sent_its_own_units(
    stripe_bed, month, finance, django_capture_on_commit_callbacks,
    currency, issuance, redemption, owed, collected, stripe_payout, stripe_collection,
):  # fmt: skip
    # Given an approved run in the currency
    run, partners = month(currency, issuance=issuance, redemption=redemption)

    # When it is executed
    lines = execute(run, finance, django_capture_on_commit_callbacks)

    # Then both lines are paid, and Stripe holds the amounts in its own units
    assert run.status == SettlementRun.Status.COMPLETED
    assert lines["REDEEMER"].net_amount == Decimal(owed)
    assert lines["ISSUER"].net_amount == -Decimal(collected)
    [transfer] = stripe_bed.transfers(run.transfer_group)
    assert (transfer.amount, transfer.currency) == (stripe_payout, currency.lower())
    assert transfer.destination == partners["REDEEMER"].stripe_account_id
    [payment] = stripe_bed.payments(run)
    assert (payment.amount, payment.currency) == (stripe_collection, currency.lower())
    # And reconciliation finds Stripe and the books in agreement
    assert selectors.reconciliation_latest(run=run).clean


def test_a_kwd_line_is_rounded_to_what_stripe_moves_and_the_remainder_is_revenue(
    stripe_bed, month, finance, django_capture_on_commit_callbacks
):
    # Given a run in KWD whose pay-out is exactly 5,000 × 0.002001 = 10.005 KWD: Stripe
    # takes three-decimal amounts only in multiples of 10 thousandths
    run, partners = month("KWD", issuance="0.0021", redemption="0.002001")
    payout = run.lines.get(partner=partners["REDEEMER"])

    # Then the line was rounded once, half-even, to 0.01 KWD, and the rest is revenue
    assert payout.exact_amount == Decimal("10.005")
    assert payout.net_amount == Decimal("10.000")
    assert payout.rounding_remainder == Decimal("0.005")
    assert run.rounding_revenue == sum(
        (line.rounding_remainder for line in run.lines.all()), Decimal(0)
    )

    # When it is executed, both lines move exactly, in Stripe's units
    lines = execute(run, finance, django_capture_on_commit_callbacks)
    assert run.status == SettlementRun.Status.COMPLETED
    assert lines["REDEEMER"].status == lines["ISSUER"].status == Status.PAID
    [transfer] = stripe_bed.transfers(run.transfer_group)
    assert (transfer.amount, transfer.currency) == (10000, "kwd")
    [payment] = stripe_bed.payments(run)
    assert payment.amount == 42000
    assert selectors.reconciliation_latest(run=run).clean


def test_an_amount_stripe_cannot_move_is_refused_before_anything_is_sent(
    stripe_bed, month, finance, django_capture_on_commit_callbacks
):
    # Given a KWD line that somehow holds an amount Stripe cannot move (a line computed
    # before lines were rounded to Stripe's step)
    run, partners = month("KWD", issuance="0.0021", redemption="0.002001")
    run.lines.filter(partner=partners["REDEEMER"]).update(
        rounded_amount=Decimal("10.005"), rounding_remainder=0, net_amount=Decimal("10.005")
    )

    # When it is executed
    lines = execute(run, finance, django_capture_on_commit_callbacks)

    # Then that line failed, with the reason, and no transfer was made for it
    payout = lines["REDEEMER"]
    assert (payout.status, payout.failure_code, payout.stripe_object_id) == (
        Status.FAILED,
        "amount_not_representable",
        "",
    )
    assert "cannot be sent through Stripe" in payout.failure_reason
    assert stripe_bed.transfers(run.transfer_group) == []
    # And the run's other line went ahead; the run waits for finance on the failed one
    assert lines["ISSUER"].status == Status.PAID
    assert run.status == SettlementRun.Status.PARTIALLY_FAILED


def test_a_payout_stripe_reports_in_isk_is_recorded_at_its_value(
    client, stripe_bed, month, monkeypatch, django_capture_on_commit_callbacks
):
    # Given a partner's connected account paid out 4,000 ISK: 400000 in Stripe's units.
    # The emulator pays out only EUR, so Stripe's answer about the payout is stood in for.
    _, partners = month("ISK", issuance="1", redemption="0.8")
    account = partners["REDEEMER"].stripe_account_id
    isk_payout = gateway.PayoutInfo(
        id="po_isk_4000", account=account, status="paid", amount=400000, currency="ISK",
        arrival_date=None, failure_code="", failure_message="",
    )  # fmt: skip
    monkeypatch.setattr(gateway, "payout_retrieve", lambda payout_id, *, account: isk_payout)

    # When Stripe says so
    body = event_body("payout.paid", {"id": isk_payout.id, "object": "payout"}, account=account)
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, body).status_code == 200

    # Then the payout is recorded as 4,000 ISK, not 400,000
    recorded = ConnectedPayout.objects.get(payout_id=isk_payout.id)
    assert (recorded.partner, recorded.amount, recorded.currency) == (
        partners["REDEEMER"],
        Decimal("4000"),
        "ISK",
    )

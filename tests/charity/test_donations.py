"""Donations: the ledger part, the receipt, the money value; refusals write nothing;
operator refunds before disbursement."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from charity import selectors, services
from charity.models import Charity, Donation
from coalition.errors import ErrorCode
from coalition.models import Account, LedgerTransaction
from coalition.selectors import account_balance, ledger_check
from tests import factories

pytestmark = pytest.mark.django_db


def _charity_account_balance(charity) -> int:
    account = Account.objects.filter(kind="charity_received", charity=charity).first()
    return account_balance(account_id=account.pk) if account else 0


def test_donation_moves_points_to_the_charity_with_a_receipt_and_a_value(rich_member, charity):
    # Given a member with 1,000 points and the default donation price of 0.01 USD
    when = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)

    # When they give 300 points
    donation = factories.give(rich_member, charity, 300, now=when)

    # Then the wallet lost them, the charity's account has them, in one DONATE transaction
    assert factories.wallet(rich_member).balance == 700
    assert _charity_account_balance(charity) == 300
    txn = donation.transaction
    assert txn.kind == LedgerTransaction.Kind.DONATE
    assert txn.member_points == -300
    assert txn.charity_id == charity.pk
    # with a receipt numbered in its year, and its money value at the donation price
    assert donation.receipt_number == "CR-2026-000001"
    assert donation.value == Decimal("3.00")
    assert donation.currency == "USD"
    assert donation.donation_price == Decimal("0.01")
    assert donation.matched_points == 0
    assert donation.source == Donation.Source.MEMBER
    assert donation.created_at == when
    assert ledger_check().ok


def test_receipt_numbers_follow_each_other_and_restart_each_year(rich_member, charity):
    first = factories.give(rich_member, charity, 100, now=datetime(2026, 12, 31, 23, tzinfo=UTC))
    second = factories.give(rich_member, charity, 100, now=datetime(2026, 12, 31, 23, tzinfo=UTC))
    next_year = factories.give(rich_member, charity, 100, now=datetime(2027, 1, 1, 1, tzinfo=UTC))

    assert [first.receipt_number, second.receipt_number, next_year.receipt_number] == [
        "CR-2026-000001",
        "CR-2026-000002",
        "CR-2027-000001",
    ]


def test_value_uses_the_programme_donation_price(rich_member, charity, programme):
    programme.donation_price = Decimal("0.0125")
    programme.save()

    donation = factories.give(rich_member, charity, 101)

    # 101 × 0.0125 = 1.2625 → rounded once, half-even, to cents
    assert donation.value == Decimal("1.26")
    assert donation.donation_price == Decimal("0.0125")


def test_a_retry_with_the_same_key_returns_the_first_donation(rich_member, charity):
    first = factories.give(rich_member, charity, 200, idempotency_key="give-once")

    again = factories.give(rich_member, charity, 200, idempotency_key="give-once")

    assert again.pk == first.pk
    assert Donation.objects.count() == 1
    assert factories.wallet(rich_member).balance == 800


def test_the_same_key_for_another_donation_is_a_conflict(rich_member, charity):
    factories.give(rich_member, charity, 200, idempotency_key="give-once")

    factories.assert_charity_refused(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        lambda: factories.give(rich_member, charity, 300, idempotency_key="give-once"),
    )


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("status", [Charity.Status.PENDING, Charity.Status.SUSPENDED])
def test_only_a_verified_charity_takes_donations(rich_member, status):
    charity = factories.CharityFactory(status=status)

    factories.assert_charity_refused(
        ErrorCode.INVALID_STATE,
        lambda: factories.give(rich_member, charity, 200),
        field="charityId",
    )


def test_below_the_minimum_donation_is_refused(rich_member, charity, programme):
    assert programme.min_donation_points == 100

    factories.assert_charity_refused(
        ErrorCode.INVALID, lambda: factories.give(rich_member, charity, 99), field="points"
    )


@pytest.mark.parametrize("points", [0, -5, 1.5, "100", True, None])
def test_points_must_be_a_positive_whole_number(rich_member, charity, points):
    factories.assert_charity_refused(
        ErrorCode.INVALID, lambda: factories.give(rich_member, charity, points), field="points"
    )


def test_more_than_the_balance_is_refused(rich_member, charity):
    factories.assert_charity_refused(
        ErrorCode.INSUFFICIENT_POINTS,
        lambda: factories.give(rich_member, charity, 1001),
        field="points",
    )


def test_points_held_at_a_till_cannot_be_given(rich_member, charity, partner):
    factories.hold(rich_member, partner, 950)

    factories.assert_charity_refused(
        ErrorCode.INSUFFICIENT_POINTS, lambda: factories.give(rich_member, charity, 100)
    )


def test_a_negative_wallet_cannot_give(member, partner, charity, other_partner):
    # Given a member who spent an earn that was then refunded: the wallet is negative
    earned = factories.earn(member, partner, 500)
    factories.burn(member, other_partner, 400)
    factories.reverse(earned)
    factories.earn(member, partner, 150)  # repays part of the debt only
    assert factories.wallet(member).balance == -250

    factories.assert_charity_refused(
        ErrorCode.INSUFFICIENT_POINTS, lambda: factories.give(member, charity, 100)
    )


def test_a_suspended_member_cannot_give(rich_member, charity):
    from coalition import services as ledger

    ledger.member_set_status(member=rich_member, status="suspended")

    factories.assert_charity_refused(
        ErrorCode.MEMBER_NOT_ACTIVE, lambda: factories.give(rich_member, charity, 100)
    )


def test_an_unknown_charity_is_not_found(db):
    from coalition.errors import CoalitionError

    with pytest.raises(CoalitionError) as refused:
        selectors.charity_get(charity_id=999999)
    assert refused.value.code == ErrorCode.NOT_FOUND
    pending = factories.CharityFactory(status=Charity.Status.PENDING)
    with pytest.raises(CoalitionError):
        selectors.charity_get(charity_id=pending.pk, listed_only=True)


# --------------------------------------------------------------------------- refunds


def test_an_operator_refunds_a_donation_before_it_is_disbursed(rich_member, charity, staff_user):
    donation = factories.give(rich_member, charity, 300)

    refunded = services.donation_refund(
        donation=donation, refunded_by=staff_user, reason="given by mistake"
    )

    assert refunded.refunded_at is not None
    assert refunded.refunded_by == staff_user
    assert refunded.refund_transaction.kind == LedgerTransaction.Kind.REVERSAL
    assert refunded.refund_transaction.reversal_of_id == donation.transaction_id
    assert factories.wallet(rich_member).balance == 1000
    assert _charity_account_balance(charity) == 0
    # the refunded donation no longer counts for the charity
    assert selectors.charity_total_donated_points(charity=charity) == 0
    assert ledger_check().ok


def test_a_donation_is_refunded_once(rich_member, charity, staff_user):
    donation = factories.give(rich_member, charity, 300)
    services.donation_refund(donation=donation, refunded_by=staff_user, reason="mistake")

    factories.assert_charity_refused(
        ErrorCode.ALREADY_REVERSED,
        lambda: services.donation_refund(donation=donation, refunded_by=staff_user, reason="x"),
    )


def test_only_staff_refund_and_with_a_reason(rich_member, charity, staff_user):
    donation = factories.give(rich_member, charity, 300)

    factories.assert_charity_refused(
        ErrorCode.INVALID,
        lambda: services.donation_refund(donation=donation, refunded_by=None, reason="x"),
    )
    factories.assert_charity_refused(
        ErrorCode.INVALID,
        lambda: services.donation_refund(donation=donation, refunded_by=staff_user, reason=""),
    )


def test_a_donation_claimed_by_settlement_cannot_be_refunded(rich_member, charity, staff_user):
    from settlement.models import SettlementClaim, SettlementRun

    donation = factories.give(rich_member, charity, 300)
    run = SettlementRun.objects.create(
        period_end=datetime(2099, 1, 1, tzinfo=UTC), currency="USD", created_by=staff_user
    )
    SettlementClaim.objects.create(transaction=donation.transaction, run=run)

    factories.assert_charity_refused(
        ErrorCode.INVALID_STATE,
        lambda: services.donation_refund(donation=donation, refunded_by=staff_user, reason="x"),
    )
    assert selectors.donation_disbursement(donation) == (run.pk, None, None)


def test_the_member_is_mailed_the_receipt_of_a_donation_they_make(
    rich_member, charity, partner, django_capture_on_commit_callbacks, mailoutbox
):
    with django_capture_on_commit_callbacks(execute=True):
        donation = factories.give(rich_member, charity, 150)

    assert len(mailoutbox) == 1
    assert donation.receipt_number in mailoutbox[0].subject
    assert mailoutbox[0].to == [rich_member.email]
    assert charity.registration_number in mailoutbox[0].body

    # automatic giving is on the annual statement instead: no mail per earn
    services.giving_preferences_update(
        member=rich_member, round_up_charity=charity, round_up_percent=10
    )
    with django_capture_on_commit_callbacks(execute=True):
        from partners.services import purchase_record

        purchase_record(
            partner=partner,
            idempotency_key="order-9",
            amount="100.00",
            currency="USD",
            reference="order-9",
            member_number=rich_member.member_number,
        )
    assert Donation.objects.filter(source="round_up").count() == 1
    assert len(mailoutbox) == 1

"""The ledger services: every success path, and every refusal with its code and nothing written."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.db import IntegrityError, transaction

from coalition import selectors, services
from coalition.errors import ErrorCode
from coalition.models import (
    Account,
    AdjustmentNote,
    LedgerTransaction,
    Member,
    PointLot,
    RedemptionHold,
)
from coalition.services.batch import qualifying_points_by_member
from tests import factories

Kind = LedgerTransaction.Kind
T0 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)


def legs(txn: LedgerTransaction) -> dict[str, int]:
    """A transaction's entries keyed by account kind."""
    return {kind: points for kind, points in txn.entries.values_list("account__kind", "points")}


def balance(member) -> selectors.Balance:
    return selectors.member_balance(member=member)


def lots(member) -> list[tuple[int, int]]:
    return list(member.lots.order_by("id").values_list("points", "remaining"))


@pytest.fixture
def ctx(member, partner, charity, staff_user):
    """A member with 1000 points and an active hold of 100: every service can be called."""
    earn = factories.earn(member, partner, 1000)
    hold = factories.hold(member, partner, 100)
    return SimpleNamespace(
        member=member, partner=partner, charity=charity, staff=staff_user, earn=earn, hold=hold
    )


OPERATIONS = {
    "earn": lambda c, points, **kw: factories.earn(c.member, c.partner, points, **kw),
    "burn": lambda c, points, **kw: factories.burn(c.member, c.partner, points, **kw),
    "donate": lambda c, points, **kw: factories.donate(c.member, c.charity, points, **kw),
    "hold": lambda c, points, **kw: factories.hold(c.member, c.partner, points, **kw),
    "capture": lambda c, points, **kw: factories.capture(c.hold, points, **kw),
    "reverse": lambda c, points, **kw: factories.reverse(c.earn, points, **kw),
    "adjust": lambda c, points, **kw: services.points_adjust(
        staff_user=c.staff,
        member=c.member,
        points=points,
        reason="goodwill",
        idempotency_key=kw.get("idempotency_key", factories.key("adjust")),
    ),
}
WITH_REFERENCE = ["earn", "burn", "hold"]


# --------------------------------------------------------------------------- bad input


NOT_POSITIVE_WHOLE = [
    (operation, points)
    for operation in OPERATIONS
    for points in [0, -5, 2.5, "10", True, None]
    # No points means "all of it" for a capture or a reversal; a negative adjustment takes
    # points back (both tested below).
    if not (points is None and operation in ("capture", "reverse"))
    and not (points == -5 and operation == "adjust")
]


@pytest.mark.parametrize(("operation", "points"), NOT_POSITIVE_WHOLE)
def test_points_that_are_not_a_positive_whole_number_are_invalid(ctx, operation, points):
    # Given a funded member with an active hold
    # When the points are zero, negative, fractional, text, a boolean or missing
    # Then the request is refused as INVALID and nothing is written
    factories.assert_refused(ErrorCode.INVALID, lambda: OPERATIONS[operation](ctx, points))


@pytest.mark.parametrize("operation", OPERATIONS)
def test_points_over_the_per_transaction_maximum_exceed_the_limit(ctx, operation, settings):
    # Given a programme that moves at most 1000 points per transaction
    settings.COALITION = {**settings.COALITION, "MAX_POINTS_PER_TRANSACTION": 1000}

    # When a request asks for 1001 points
    # Then it is refused with LIMIT_EXCEEDED and nothing is written
    factories.assert_refused(
        ErrorCode.LIMIT_EXCEEDED, lambda: OPERATIONS[operation](ctx, 1001), field="points"
    )


def test_the_maximum_itself_is_allowed_and_a_negative_adjustment_is_limited_too(ctx, settings):
    # Given a maximum of 1000 points per transaction
    settings.COALITION = {**settings.COALITION, "MAX_POINTS_PER_TRANSACTION": 1000}

    # When an earn moves exactly the maximum, and an adjustment takes back more than it
    earned = factories.earn(ctx.member, ctx.partner, 1000)

    # Then the earn is booked and the adjustment is refused
    assert earned.member_points == 1000
    factories.assert_refused(
        ErrorCode.LIMIT_EXCEEDED, lambda: OPERATIONS["adjust"](ctx, -1001), field="points"
    )


@pytest.mark.parametrize("operation", WITH_REFERENCE)
def test_a_reference_over_255_characters_is_invalid(ctx, operation):
    # Given a partner sending a 256-character receipt reference
    reference = "R" * 256

    # When it earns, burns or authorises with it
    # Then the request is refused as INVALID on the reference, and nothing is written
    factories.assert_refused(
        ErrorCode.INVALID,
        lambda: OPERATIONS[operation](ctx, 10, reference=reference),
        field="reference",
    )


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("idempotency_key", ["k" * 256, "", "   "])
def test_an_idempotency_key_over_255_characters_or_blank_is_invalid(
    ctx, operation, idempotency_key
):
    # Given a caller whose idempotency key is too long or blank
    # When it sends any write with it
    # Then the write is refused as INVALID on the key, and nothing is written
    factories.assert_refused(
        ErrorCode.INVALID,
        lambda: OPERATIONS[operation](ctx, 10, idempotency_key=idempotency_key),
        field="idempotencyKey",
    )


def test_a_reference_of_exactly_255_characters_is_kept(member, partner):
    # Given a reference at the limit
    reference = "R" * 255

    # When a purchase is recorded with it
    txn = factories.earn(member, partner, 10, reference=reference)

    # Then it is stored in full
    assert LedgerTransaction.objects.get(pk=txn.pk).reference == reference


@pytest.mark.parametrize("status", [Member.Status.SUSPENDED, Member.Status.CLOSED])
@pytest.mark.parametrize("operation", ["earn", "burn", "donate", "hold"])
def test_a_member_who_is_not_active_can_neither_earn_nor_spend(ctx, operation, status):
    # Given a funded member who is then suspended or closed
    services.member_set_status(member=ctx.member, status=status)

    # When a partner or the member tries to move points
    # Then the request is refused with MEMBER_NOT_ACTIVE and nothing is written
    factories.assert_refused(ErrorCode.MEMBER_NOT_ACTIVE, lambda: OPERATIONS[operation](ctx, 10))


def test_a_suspended_member_can_be_reactivated_but_a_closed_one_cannot(member, partner):
    # Given a suspended member
    services.member_set_status(member=member, status=Member.Status.SUSPENDED)

    # When they are reactivated, they earn again
    services.member_set_status(member=member, status=Member.Status.ACTIVE)
    factories.earn(member, partner, 10)
    assert balance(member).balance == 10

    # Then once closed, reopening is refused and the member stays closed
    services.member_set_status(member=member, status=Member.Status.CLOSED)
    factories.assert_refused(
        ErrorCode.INVALID_STATE,
        lambda: services.member_set_status(member=member, status=Member.Status.ACTIVE),
    )
    assert Member.objects.get(pk=member.pk).status == Member.Status.CLOSED


@pytest.mark.parametrize("operation", ["earn", "burn", "hold"])
def test_a_suspended_partner_cannot_issue_or_redeem(ctx, operation):
    # Given a partner whose account is suspended
    ctx.partner.status = "suspended"
    ctx.partner.save(update_fields=["status"])

    # When its till earns, burns or authorises
    # Then the request is refused with INVALID_STATE and nothing is written
    factories.assert_refused(ErrorCode.INVALID_STATE, lambda: OPERATIONS[operation](ctx, 10))


@pytest.mark.parametrize("party", ["member", "partner"])
def test_a_hold_cannot_be_captured_once_its_member_or_partner_is_suspended(member, partner, party):
    # Given a hold authorised while both were active
    factories.earn(member, partner, 300)
    hold = factories.hold(member, partner, 100)

    # When the member or the partner is suspended before the till captures
    if party == "member":
        services.member_set_status(member=member, status=Member.Status.SUSPENDED)
        code = ErrorCode.MEMBER_NOT_ACTIVE
    else:
        partner.status = "suspended"
        partner.save(update_fields=["status"])
        code = ErrorCode.INVALID_STATE

    # Then the capture is refused as a burn would be, and nothing is written
    factories.assert_refused(code, lambda: factories.capture(hold))
    hold.refresh_from_db()
    assert hold.status == RedemptionHold.Status.ACTIVE
    assert balance(member) == selectors.Balance(balance=300, held=100, spendable=200)
    # And the hold can still be voided: its points are the member's again
    factories.void(hold)
    assert balance(member).held == 0 and balance(member).balance == 300


def test_a_refund_of_an_earn_from_before_the_window_leaves_qualifying_points_alone(member, partner):
    # Given 1,000 points earned 400 days ago and 500 earned this year
    old = factories.earn(member, partner, 1000, now=T0 - timedelta(days=400))
    factories.earn(member, partner, 500, now=T0 - timedelta(days=10))
    assert services.qualifying_points(member=member, now=T0) == 500

    # When the old earn is refunded today
    factories.reverse(old, now=T0)

    # Then the qualifying points are still 500 (the old earn no longer counted anyway),
    # for one member and for a batch alike
    assert services.qualifying_points(member=member, now=T0) == 500
    assert qualifying_points_by_member(member_ids=[member.pk], now=T0) == {member.pk: 500}
    # While a refund of this year's earn counts against them
    recent = LedgerTransaction.objects.get(member=member, member_points=500)
    factories.reverse(recent, points=200, now=T0)
    assert services.qualifying_points(member=member, now=T0) == 300


def test_partner_points_without_a_partner_are_invalid(member):
    # Given an earn with partner points but no partner
    # When it is booked
    # Then it is refused as INVALID on the partner
    factories.assert_refused(
        ErrorCode.INVALID,
        lambda: services.points_earn(
            caller="system:test",
            idempotency_key=factories.key(),
            member=member,
            partner=None,
            partner_points=10,
        ),
        field="partner",
    )


def test_unknown_or_malformed_member_numbers_are_not_found(member):
    # Given an enrolled member
    number = member.member_number
    unknown = number[:-4] + ("0000" if not number.endswith("0000") else "1111")

    # When a partner looks up their number, an unknown number and malformed ones
    found = selectors.member_get_by_number(member_number=number)

    # Then the member is found and the others are NOT_FOUND on memberNumber
    assert found == member
    for candidate in [unknown, "not-a-number", "", None, f"{number} "]:
        with pytest.raises(services.NotFound) as missing:
            selectors.member_get_by_number(member_number=candidate)
        assert missing.value.code == ErrorCode.NOT_FOUND
        assert missing.value.field == "memberNumber"


# --------------------------------------------------------------------------- earn / burn / donate


def test_earn_credits_the_wallet_from_the_partner_and_opens_a_lot(member, partner):
    # Given a member and a partner under the default 24-month fixed lifetime
    # When the partner records a purchase worth 500 points
    txn = factories.earn(member, partner, 500, reference="R-1", now=T0)

    # Then the partner's issued account pays for the member's credit
    assert txn.kind == Kind.EARN
    assert txn.member_points == 500
    assert legs(txn) == {"partner_issued": -500, "member_wallet": 500}
    issued = Account.objects.get(kind=Account.Kind.PARTNER_ISSUED, partner=partner)
    assert selectors.account_balance(account_id=issued.pk) == -500
    # And the member sees the points, in a lot expiring 24 months later
    assert balance(member) == selectors.Balance(balance=500, held=0, spendable=500)
    lot = PointLot.objects.get(member=member)
    assert (lot.points, lot.remaining) == (500, 500)
    assert lot.expires_at == datetime(2032, 1, 15, 9, 0, tzinfo=UTC)
    assert factories.wallet(member).last_activity_at == T0
    assert selectors.ledger_check().ok


def test_a_bonus_can_be_funded_by_partner_and_operator_together(member, partner):
    # Given a promotion: 100 points from the partner, 50 from the operator's marketing budget
    # When the bonus is booked
    txn = services.points_earn(
        caller=f"partner:{partner.pk}",
        idempotency_key=factories.key(),
        member=member,
        partner=partner,
        partner_points=100,
        operator_points=50,
        kind=Kind.BONUS,
    )

    # Then both accounts fund the member's 150 points
    assert txn.kind == Kind.BONUS
    assert legs(txn) == {"partner_issued": -100, "operator_marketing": -50, "member_wallet": 150}
    assert balance(member).balance == 150
    assert selectors.ledger_check().ok


def test_earning_as_another_kind_is_invalid(member, partner):
    # Given an earn that claims to be a burn
    # When it is booked
    # Then it is refused and nothing is written
    factories.assert_refused(
        ErrorCode.INVALID, lambda: factories.earn(member, partner, 10, kind=Kind.BURN), field="kind"
    )


def test_burn_at_another_partner_moves_points_to_its_redeemed_account(
    member, partner, other_partner
):
    # Given 500 points earned at one partner
    factories.earn(member, partner, 500)

    # When the member redeems 200 at another partner's till
    txn = factories.burn(member, other_partner, 200)

    # Then the other partner's redeemed account receives them
    assert txn.kind == Kind.BURN
    assert txn.member_points == -200
    assert legs(txn) == {"member_wallet": -200, "partner_redeemed": 200}
    assert balance(member).spendable == 300
    assert lots(member) == [(500, 300)]
    assert selectors.ledger_check().ok


def test_burning_more_than_the_balance_is_refused(member, partner):
    # Given 100 points
    factories.earn(member, partner, 100)

    # When 101 are redeemed
    # Then it is refused with INSUFFICIENT_POINTS, nothing written; exactly 100 works
    factories.assert_refused(
        ErrorCode.INSUFFICIENT_POINTS, lambda: factories.burn(member, partner, 101)
    )
    factories.burn(member, partner, 100)
    assert balance(member).balance == 0


def test_donation_moves_points_to_the_charity(member, partner, charity):
    # Given 300 points
    factories.earn(member, partner, 300)

    # When the member donates 120 to a charity
    txn = factories.donate(member, charity, 120)

    # Then the charity's received account holds them and the wallet is debited
    assert txn.kind == Kind.DONATE
    assert legs(txn) == {"member_wallet": -120, "charity_received": 120}
    received = Account.objects.get(kind=Account.Kind.CHARITY_RECEIVED, charity=charity)
    assert selectors.account_balance(account_id=received.pk) == 120
    assert balance(member).balance == 180
    # And more than is left is refused
    factories.assert_refused(
        ErrorCode.INSUFFICIENT_POINTS, lambda: factories.donate(member, charity, 181)
    )
    assert selectors.ledger_check().ok


def test_minimum_redemption_applies_to_burns_and_holds(programme, member, partner):
    # Given a programme whose minimum redemption is 50 points
    programme.min_redemption_points = 50
    programme.save()
    factories.earn(member, partner, 500)

    # When a till redeems or authorises 49 points
    # Then both are refused as INVALID on the points; 50 is accepted
    factories.assert_refused(
        ErrorCode.INVALID, lambda: factories.burn(member, partner, 49), field="points"
    )
    factories.assert_refused(
        ErrorCode.INVALID, lambda: factories.hold(member, partner, 49), field="points"
    )
    factories.burn(member, partner, 50)
    assert balance(member).balance == 450


def test_daily_burn_limit_counts_the_calendar_day(programme, member, partner):
    # Given a daily limit of 100 redeemed points and plenty of points
    programme.daily_burn_limit = 100
    programme.save()
    factories.earn(member, partner, 1000, now=T0)
    day = T0.replace(hour=0)

    # When 60 are redeemed in the morning
    factories.burn(member, partner, 60, now=day + timedelta(hours=9))

    # Then 41 more that evening, or a hold of 41, exceed the limit, and nothing is written
    late = day + timedelta(hours=23, minutes=59)
    factories.assert_refused(
        ErrorCode.LIMIT_EXCEEDED,
        lambda: factories.burn(member, partner, 41, now=late),
        field="points",
    )
    factories.assert_refused(
        ErrorCode.LIMIT_EXCEEDED, lambda: factories.hold(member, partner, 41, now=late)
    )
    # And 40 reach the limit exactly, while the next day starts afresh
    factories.burn(member, partner, 40, now=late)
    factories.burn(member, partner, 100, now=day + timedelta(days=1))
    assert balance(member).balance == 800


def test_points_reserved_by_holds_count_against_the_daily_burn_limit(programme, member, partner):
    # Given a daily limit of 100 redeemed points and a hold of 60 authorised this morning
    programme.daily_burn_limit = 100
    programme.save()
    factories.earn(member, partner, 1000, now=T0)
    hold = factories.hold(member, partner, 60, now=T0)

    # When the member tries to redeem or reserve 41 more the same day
    # Then both are refused: captured, the hold would take the day past the limit
    soon = T0 + timedelta(minutes=5)
    factories.assert_refused(
        ErrorCode.LIMIT_EXCEEDED, lambda: factories.burn(member, partner, 41, now=soon)
    )
    factories.assert_refused(
        ErrorCode.LIMIT_EXCEEDED, lambda: factories.hold(member, partner, 41, now=soon)
    )

    # When the hold is captured, its 60 count as redeemed; once voided, they would not
    factories.capture(hold, now=soon)
    factories.assert_refused(
        ErrorCode.LIMIT_EXCEEDED, lambda: factories.burn(member, partner, 41, now=soon)
    )
    second = factories.hold(member, partner, 40, now=soon)
    factories.void(second, now=soon)
    factories.burn(member, partner, 40, now=soon)
    assert balance(member).balance == 900


# --------------------------------------------------------------------------- holds


def test_a_hold_reserves_points_so_they_cannot_be_spent_twice(member, partner, charity):
    # Given 300 points
    factories.earn(member, partner, 300)

    # When a till authorises 200
    hold = factories.hold(member, partner, 200, reference="till-7")

    # Then they are reserved: balance unchanged, spendable down, no ledger transaction yet
    assert hold.status == RedemptionHold.Status.ACTIVE
    assert balance(member) == selectors.Balance(balance=300, held=200, spendable=100)
    assert LedgerTransaction.objects.filter(kind=Kind.BURN).count() == 0
    # And nothing can spend the reserved points
    for spend in (
        lambda: factories.burn(member, partner, 101),
        lambda: factories.donate(member, charity, 101),
        lambda: factories.hold(member, partner, 101),
    ):
        factories.assert_refused(ErrorCode.INSUFFICIENT_POINTS, spend)
    factories.burn(member, partner, 100)
    assert balance(member) == selectors.Balance(balance=200, held=200, spendable=0)
    assert selectors.ledger_check().ok


def test_capturing_a_hold_in_full_burns_its_points(member, partner):
    # Given a hold of 200 out of 300 points
    factories.earn(member, partner, 300)
    hold = factories.hold(member, partner, 200, reference="till-7")

    # When the till captures it
    txn = factories.capture(hold)

    # Then the points are burned at the partner and the reservation is gone
    assert txn.kind == Kind.BURN
    assert txn.hold_id == hold.pk
    assert txn.reference == "till-7"
    assert legs(txn) == {"member_wallet": -200, "partner_redeemed": 200}
    hold.refresh_from_db()
    assert (hold.status, hold.captured_points) == (RedemptionHold.Status.CAPTURED, 200)
    assert balance(member) == selectors.Balance(balance=100, held=0, spendable=100)
    assert selectors.ledger_check().ok


def test_a_partial_capture_releases_the_rest(member, partner):
    # Given a hold of 200 out of 300 points
    factories.earn(member, partner, 300)
    hold = factories.hold(member, partner, 200)

    # When the till captures only 150
    txn = factories.capture(hold, 150)

    # Then 150 are burned and the other 50 are spendable again
    assert txn.member_points == -150
    hold.refresh_from_db()
    assert (hold.status, hold.captured_points) == (RedemptionHold.Status.CAPTURED, 150)
    assert balance(member) == selectors.Balance(balance=150, held=0, spendable=150)
    assert selectors.ledger_check().ok


def test_capturing_more_than_the_hold_is_refused(member, partner):
    # Given a hold of 200 out of 1000 points
    factories.earn(member, partner, 1000)
    hold = factories.hold(member, partner, 200)

    # When the till captures 201
    # Then it is refused as INVALID, nothing written, and the hold stays active
    factories.assert_refused(
        ErrorCode.INVALID, lambda: factories.capture(hold, 201), field="points"
    )
    hold.refresh_from_db()
    assert hold.status == RedemptionHold.Status.ACTIVE
    assert balance(member).held == 200


def test_voiding_a_hold_releases_its_points_without_burning(member, partner):
    # Given a hold of 200 out of 300 points
    factories.earn(member, partner, 300)
    hold = factories.hold(member, partner, 200)

    # When the till voids it
    voided = factories.void(hold)

    # Then the points are spendable again and no ledger transaction was written
    assert voided.status == RedemptionHold.Status.VOIDED
    assert voided.resolved_at is not None
    assert balance(member) == selectors.Balance(balance=300, held=0, spendable=300)
    assert LedgerTransaction.objects.exclude(kind=Kind.EARN).count() == 0
    # And a voided hold can neither be voided again nor captured
    factories.assert_refused(ErrorCode.HOLD_NOT_ACTIVE, lambda: factories.void(hold))
    factories.assert_refused(ErrorCode.HOLD_NOT_ACTIVE, lambda: factories.capture(hold))


def test_a_captured_hold_cannot_be_captured_or_voided_again(member, partner):
    # Given a captured hold
    factories.earn(member, partner, 300)
    hold = factories.hold(member, partner, 100)
    factories.capture(hold)

    # When the till captures or voids it again with new keys
    # Then both are refused with HOLD_NOT_ACTIVE and nothing is written
    factories.assert_refused(ErrorCode.HOLD_NOT_ACTIVE, lambda: factories.capture(hold))
    factories.assert_refused(ErrorCode.HOLD_NOT_ACTIVE, lambda: factories.void(hold))
    assert balance(member).balance == 200


def test_a_hold_cannot_be_captured_once_its_time_is_up(member, partner, settings):
    # Given a 30-minute hold authorised at T0
    factories.earn(member, partner, 300, now=T0)
    hold = factories.hold(member, partner, 100, now=T0)
    assert hold.expires_at == T0 + timedelta(minutes=30)

    # When the till captures it exactly at its expiry
    # Then it is refused with HOLD_NOT_ACTIVE and nothing is written
    factories.assert_refused(
        ErrorCode.HOLD_NOT_ACTIVE,
        lambda: factories.capture(hold, now=hold.expires_at),
        field="holdId",
    )
    # And a microsecond earlier it could still be captured
    factories.capture(hold, now=hold.expires_at - timedelta(microseconds=1))
    assert balance(member).balance == 200


def test_an_expired_hold_cannot_be_captured(member, partner):
    # Given a hold the expiry job has expired
    factories.earn(member, partner, 300, now=T0)
    hold = factories.hold(member, partner, 100, now=T0)
    assert services.holds_expire_due(now=T0 + timedelta(hours=1)) == [hold.pk]

    # When the till captures it
    # Then it is refused with HOLD_NOT_ACTIVE
    factories.assert_refused(
        ErrorCode.HOLD_NOT_ACTIVE, lambda: factories.capture(hold, now=T0 + timedelta(hours=1))
    )


def test_holds_expire_when_due_and_release_their_points(member, partner, other_partner):
    # Given two holds, authorised ten minutes apart
    factories.earn(member, partner, 500, now=T0)
    first = factories.hold(member, partner, 100, now=T0)
    second = factories.hold(member, other_partner, 150, now=T0 + timedelta(minutes=10))

    # When the expiry job runs just before the first is due
    # Then nothing expires
    assert services.holds_expire_due(now=T0 + timedelta(minutes=30, microseconds=-1)) == []
    assert balance(member).held == 250

    # When it runs at the first's expiry, only that one expires and its points are released
    assert services.holds_expire_due(now=T0 + timedelta(minutes=30)) == [first.pk]
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == RedemptionHold.Status.EXPIRED
    assert first.resolved_at == T0 + timedelta(minutes=30)
    assert second.status == RedemptionHold.Status.ACTIVE
    assert balance(member) == selectors.Balance(balance=500, held=150, spendable=350)

    # And running it again at the same moment changes nothing
    assert services.holds_expire_due(now=T0 + timedelta(minutes=30)) == []
    assert selectors.ledger_check().ok


def test_a_due_hold_no_longer_blocks_a_burn(member, partner):
    # Given all points reserved by a hold whose time is up (the expiry job has not run yet)
    factories.earn(member, partner, 300, now=T0)
    hold = factories.hold(member, partner, 300, now=T0)

    # When the member redeems after the hold's expiry
    factories.burn(member, partner, 300, now=T0 + timedelta(minutes=31))

    # Then the burn releases the due hold and succeeds
    hold.refresh_from_db()
    assert hold.status == RedemptionHold.Status.EXPIRED
    assert balance(member) == selectors.Balance(balance=0, held=0, spendable=0)
    assert selectors.ledger_check().ok


# --------------------------------------------------------------------------- reversals


def test_a_full_reversal_mirrors_the_earn_and_cannot_be_repeated(member, partner):
    # Given an earn of 500
    earn = factories.earn(member, partner, 500)

    # When the partner refunds the purchase in full
    reversal = factories.reverse(earn, reason="refund")

    # Then a reversing transaction mirrors the earn and takes the lot back
    assert reversal.kind == Kind.REVERSAL
    assert reversal.reversal_of_id == earn.pk
    assert legs(reversal) == {"partner_issued": 500, "member_wallet": -500}
    assert balance(member).balance == 0
    assert lots(member) == [(500, 0)]
    assert services.reversible_points(earn) == 0
    # And reversing it again is refused with ALREADY_REVERSED, nothing written
    factories.assert_refused(
        ErrorCode.ALREADY_REVERSED, lambda: factories.reverse(earn), field="transactionId"
    )
    factories.assert_refused(ErrorCode.ALREADY_REVERSED, lambda: factories.reverse(earn, 1))
    assert selectors.ledger_check().ok


def test_a_reversal_cannot_be_reversed(member, partner):
    # Given a reversed earn
    reversal = factories.reverse(factories.earn(member, partner, 500), 100)

    # When someone tries to reverse the reversal
    # Then it is refused with INVALID_STATE and nothing is written
    factories.assert_refused(
        ErrorCode.INVALID_STATE, lambda: factories.reverse(reversal), field="transactionId"
    )


def test_expiry_and_adjustments_are_not_reversible(member, partner, staff_user):
    # Given an adjustment and an expiry
    adjustment = services.points_adjust(
        staff_user=staff_user,
        member=member,
        points=50,
        reason="goodwill",
        idempotency_key=factories.key(),
    )
    factories.earn(member, partner, 100, now=T0)
    services.points_expire_due(now=T0 + timedelta(days=3 * 365))
    expiry = LedgerTransaction.objects.get(kind=Kind.EXPIRE)

    # When either is reversed
    # Then it is refused with INVALID_STATE
    for original in (adjustment, expiry):
        factories.assert_refused(ErrorCode.INVALID_STATE, lambda o=original: factories.reverse(o))


def test_partial_reversals_never_exceed_what_remains(member, partner):
    # Given an earn of 100
    earn = factories.earn(member, partner, 100)

    # When 60 are reversed
    factories.reverse(earn, 60)

    # Then 50 more are refused as INVALID (only 40 remain), nothing written
    factories.assert_refused(ErrorCode.INVALID, lambda: factories.reverse(earn, 50), field="points")
    assert services.reversible_points(earn) == 40
    # And the last 40 can be reversed, after which even one point is ALREADY_REVERSED
    factories.reverse(earn, 40)
    factories.assert_refused(ErrorCode.ALREADY_REVERSED, lambda: factories.reverse(earn, 1))
    assert sum(-r.member_points for r in earn.reversals.all()) == 100
    assert balance(member).balance == 0
    assert selectors.ledger_check().ok


def test_a_partial_reversal_splits_across_the_funding_accounts_exactly(member, partner):
    # Given an earn funded 70 by the partner and 30 by the operator
    earn = services.points_earn(
        caller=f"partner:{partner.pk}",
        idempotency_key=factories.key(),
        member=member,
        partner=partner,
        partner_points=70,
        operator_points=30,
    )

    # When 15 points are reversed
    reversal = factories.reverse(earn, 15)

    # Then the funders get back 15 between them, in proportion, rounded by largest remainder
    assert legs(reversal) == {"member_wallet": -15, "partner_issued": 11, "operator_marketing": 4}
    assert selectors.ledger_check().ok


def test_reversing_a_spent_earn_takes_the_wallet_negative_and_blocks_spending(
    member, partner, charity
):
    # Given 100 points earned of which 80 were redeemed
    earn = factories.earn(member, partner, 100)
    factories.burn(member, partner, 80)

    # When the purchase is refunded in full
    factories.reverse(earn)

    # Then the wallet owes 80 points and nothing can be spent or reserved
    assert balance(member) == selectors.Balance(balance=-80, held=0, spendable=0)
    for spend in (
        lambda: factories.burn(member, partner, 1),
        lambda: factories.hold(member, partner, 1),
        lambda: factories.donate(member, charity, 1),
    ):
        factories.assert_refused(ErrorCode.INSUFFICIENT_POINTS, spend, field="points")
    assert selectors.ledger_check().ok


def test_earning_into_a_negative_wallet_repays_the_debt_first(member, partner):
    # Given a wallet at -80 after a refund of spent points
    earn = factories.earn(member, partner, 100)
    factories.burn(member, partner, 80)
    factories.reverse(earn)

    # When the member earns 100
    factories.earn(member, partner, 100)

    # Then 80 repay the debt and only 20 land in a spendable lot
    assert balance(member) == selectors.Balance(balance=20, held=0, spendable=20)
    assert lots(member) == [(100, 0), (100, 20)]
    factories.burn(member, partner, 20)
    factories.assert_refused(
        ErrorCode.INSUFFICIENT_POINTS, lambda: factories.burn(member, partner, 1)
    )
    assert selectors.ledger_check().ok


def test_a_reversed_burn_returns_points_to_their_lots_with_their_expiry(programme, member, partner):
    # Given two lots expiring a day apart, and a burn of 150 taking all of the first
    factories.earn(member, partner, 100, now=T0)
    factories.earn(member, partner, 100, now=T0 + timedelta(days=1))
    first, second = PointLot.objects.filter(member=member).order_by("expires_at")
    burn = factories.burn(member, partner, 150, now=T0 + timedelta(days=2))
    assert lots(member) == [(100, 0), (100, 50)]

    # When 30 points of the burn are refunded
    factories.reverse(burn, 30)

    # Then they go back to the latest-expiring lot the burn used
    assert lots(member) == [(100, 0), (100, 80)]

    # When the rest is refunded
    factories.reverse(burn)

    # Then every point is back in its original lot, with its original expiry, and no new lot
    assert lots(member) == [(100, 100), (100, 100)]
    assert list(PointLot.objects.order_by("id").values_list("expires_at", flat=True)) == [
        first.expires_at,
        second.expires_at,
    ]
    assert balance(member).balance == 200
    assert selectors.ledger_check().ok


def test_a_reversed_donation_comes_back_from_the_charity(member, partner, charity):
    # Given a donation of 120
    factories.earn(member, partner, 300)
    donation = factories.donate(member, charity, 120)

    # When it is reversed
    reversal = factories.reverse(donation, caller="staff:1")

    # Then the charity's account gives the points back
    assert legs(reversal) == {"member_wallet": 120, "charity_received": -120}
    assert reversal.charity_id == charity.pk
    assert balance(member).balance == 300
    assert selectors.ledger_check().ok


# --------------------------------------------------------------------------- adjustments


def test_staff_adjust_points_up_and_down_with_a_reason(member, partner, staff_user):
    # Given a member with 100 points
    factories.earn(member, partner, 100)

    # When finance credits 50 points for a complaint
    credit = services.points_adjust(
        staff_user=staff_user,
        member=member,
        points=50,
        reason="complaint #12",
        idempotency_key=factories.key(),
    )

    # Then the operator's adjustment account funds them, with who and why recorded
    assert credit.kind == Kind.ADJUSTMENT
    assert credit.caller == f"staff:{staff_user.pk}"
    assert legs(credit) == {"member_wallet": 50, "operator_adjustment": -50}
    note = AdjustmentNote.objects.get(transaction=credit)
    assert (note.staff_user, note.reason) == (staff_user, "complaint #12")
    assert balance(member).balance == 150

    # When finance takes 30 back
    debit = services.points_adjust(
        staff_user=staff_user,
        member=member,
        points=-30,
        reason="duplicate credit",
        idempotency_key=factories.key(),
    )

    # Then the wallet is debited, and taking back more than is spendable is refused
    assert legs(debit) == {"member_wallet": -30, "operator_adjustment": 30}
    assert balance(member).balance == 120
    factories.assert_refused(
        ErrorCode.INSUFFICIENT_POINTS,
        lambda: services.points_adjust(
            staff_user=staff_user,
            member=member,
            points=-121,
            reason="too much",
            idempotency_key=factories.key(),
        ),
    )
    assert selectors.ledger_check().ok


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_an_adjustment_needs_a_reason(member, staff_user, reason):
    # Given finance without a reason
    # When it adjusts points
    # Then it is refused as INVALID on the reason, nothing written
    factories.assert_refused(
        ErrorCode.INVALID,
        lambda: services.points_adjust(
            staff_user=staff_user,
            member=member,
            points=50,
            reason=reason,
            idempotency_key=factories.key(),
        ),
        field="reason",
    )


def test_only_staff_may_adjust_points(member):
    # Given a user who is not staff, and no user at all
    from django.contrib.auth import get_user_model

    clerk = get_user_model().objects.create_user(username="clerk", password="x-Str0ng-pass")

    # When either adjusts points
    # Then it is refused with PERMISSION_DENIED and nothing is written
    for user in (clerk, None):
        factories.assert_refused(
            ErrorCode.PERMISSION_DENIED,
            lambda u=user: services.points_adjust(
                staff_user=u,
                member=member,
                points=50,
                reason="goodwill",
                idempotency_key=factories.key(),
            ),
        )


# --------------------------------------------------------------------------- members


def test_luhn_check_digits():
    # Given the textbook Luhn example
    # When its check digit is computed and numbers are validated
    # Then the known answer holds, and any single changed digit is caught
    assert services.luhn_check_digit("7992739871") == "3"
    assert services.luhn_valid("79927398713")
    assert not services.luhn_valid("79927398710")
    assert not services.luhn_valid("79927398713x")
    assert not services.luhn_valid("")


def test_member_numbers_are_unique_16_digit_luhn_numbers(programme):
    # Given twenty enrolled members
    members = [factories.member() for _ in range(20)]

    # When their numbers are inspected
    numbers = [m.member_number for m in members]

    # Then each is 16 digits with the programme prefix and a valid check digit
    assert len(set(numbers)) == 20
    for number in numbers:
        assert len(number) == 16 and number.startswith("6337")
        assert services.luhn_valid(number)
        mistyped = number[:8] + str((int(number[8]) + 1) % 10) + number[9:]
        assert not services.luhn_valid(mistyped)
    # And every member has a wallet with nothing in it
    assert [factories.wallet(m).balance for m in members] == [0] * 20


def test_email_is_unique_whatever_its_case(programme):
    # Given a member enrolled as Ann.Lee@Example.com
    first = services.member_create(email="Ann.Lee@Example.com", display_name="Ann")

    # When someone enrols with the same address in other case
    # Then it is refused as INVALID on the email, and nothing is written
    factories.assert_refused(
        ErrorCode.INVALID,
        lambda: services.member_create(email="  ann.lee@example.COM ", display_name="Ann 2"),
        field="email",
    )
    assert list(Member.objects.values_list("pk", flat=True)) == [first.pk]
    # And the database refuses it too, whatever writes it
    with pytest.raises(IntegrityError), transaction.atomic():
        Member.objects.create(
            member_number="6337000000000001", email="ANN.LEE@EXAMPLE.COM", display_name="x"
        )


@pytest.mark.parametrize("email", ["", "no-at-sign", "@example.com", "ann@", "a b@example.com"])
def test_an_invalid_email_is_refused(programme, email):
    # Given an enrolment with a malformed address
    # When it is submitted
    # Then it is refused as INVALID on the email, nothing written
    factories.assert_refused(
        ErrorCode.INVALID,
        lambda: services.member_create(email=email, display_name="Ann"),
        field="email",
    )

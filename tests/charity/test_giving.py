"""Automatic giving: a round-up share of every earn, and points given instead of expiring.
Both are ordinary donations with receipts, chosen (and changed) by the member."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from charity import selectors, services
from charity.models import Charity, Donation, GivingPreference
from charity.tasks import expire_with_giving
from coalition.errors import ErrorCode
from coalition.models import LedgerTransaction, PointLot
from coalition.selectors import ledger_check
from partners.services import purchase_record
from tests import factories

pytestmark = pytest.mark.django_db


def _purchase(partner, member, amount, **kwargs):
    return purchase_record(
        partner=partner,
        idempotency_key=factories.key("purchase"),
        amount=amount,
        currency="USD",
        reference=factories.key("order"),
        member_number=member.member_number,
        **kwargs,
    )


# --------------------------------------------------------------------------- preferences


def test_a_member_chooses_and_changes_automatic_giving(member, charity):
    other = factories.CharityFactory()

    services.giving_preferences_update(member=member, round_up_charity=charity, round_up_percent=10)
    services.giving_preferences_update(member=member, expiry_charity=other)

    preference = selectors.giving_preferences_get(member=member)
    assert (preference.round_up_charity, preference.round_up_percent) == (charity, 10)
    assert preference.expiry_charity == other

    # switching round-up off keeps giving-instead-of-expiry
    services.giving_preferences_update(member=member, round_up_charity=None, round_up_percent=None)
    preference = selectors.giving_preferences_get(member=member)
    assert preference.round_up_charity is None and preference.expiry_charity == other


@pytest.mark.parametrize("percent", [0, 101, -1, 12.5, "10", True])
def test_a_round_up_share_outside_1_to_100_is_refused(member, charity, percent):
    factories.assert_charity_refused(
        ErrorCode.INVALID,
        lambda: services.giving_preferences_update(
            member=member, round_up_charity=charity, round_up_percent=percent
        ),
        field="roundUpPercent",
    )


def test_round_up_needs_a_charity_and_a_share(member, charity):
    factories.assert_charity_refused(
        ErrorCode.INVALID,
        lambda: services.giving_preferences_update(member=member, round_up_percent=10),
    )


@pytest.mark.parametrize("status", [Charity.Status.PENDING, Charity.Status.SUSPENDED])
def test_automatic_giving_needs_a_verified_charity(member, status):
    charity = factories.CharityFactory(status=status)

    factories.assert_charity_refused(
        ErrorCode.INVALID_STATE,
        lambda: services.giving_preferences_update(
            member=member, round_up_charity=charity, round_up_percent=5
        ),
    )
    factories.assert_charity_refused(
        ErrorCode.INVALID_STATE,
        lambda: services.giving_preferences_update(member=member, expiry_charity=charity),
    )


# --------------------------------------------------------------------------- round-up


def test_round_up_gives_a_share_of_every_earn_in_the_same_transaction(member, partner, charity):
    # Given a member who gives 10 % of every earn
    services.giving_preferences_update(member=member, round_up_charity=charity, round_up_percent=10)

    # When they earn 255 points at a partner (1 point per dollar)
    result = _purchase(partner, member, "255.00")

    # Then floor(255 × 10 %) = 25 points went to the charity, as an ordinary donation
    assert result.points_awarded == 255
    donation = Donation.objects.get()
    assert donation.source == Donation.Source.ROUND_UP
    assert donation.points == 25
    assert donation.value == Decimal("0.25")
    assert donation.receipt_number.startswith("CR-")
    assert donation.transaction.metadata["source"] == "round_up"
    assert factories.wallet(member).balance == 230
    assert ledger_check().ok


def test_round_up_has_no_minimum_and_skips_zero(member, partner, charity, programme):
    assert programme.min_donation_points == 100
    services.giving_preferences_update(member=member, round_up_charity=charity, round_up_percent=1)

    _purchase(partner, member, "99.00")  # 1 % of 99 rounds down to 0: nothing
    _purchase(partner, member, "250.00")  # 2 points, below the manual minimum: given

    assert list(Donation.objects.values_list("points", flat=True)) == [2]
    assert factories.wallet(member).balance == 99 + 248


def test_a_retried_purchase_does_not_round_up_twice(member, partner, charity):
    services.giving_preferences_update(member=member, round_up_charity=charity, round_up_percent=50)
    kwargs = {
        "partner": partner,
        "idempotency_key": "till-7-order-1",
        "amount": "100.00",
        "currency": "USD",
        "reference": "order-1",
        "member_number": member.member_number,
    }

    purchase_record(**kwargs)
    purchase_record(**kwargs)

    assert Donation.objects.count() == 1
    assert factories.wallet(member).balance == 50


def test_round_up_pauses_while_the_charity_is_suspended(member, partner, charity, staff_user):
    services.giving_preferences_update(member=member, round_up_charity=charity, round_up_percent=10)
    services.charity_set_status(charity=charity, status="suspended", changed_by=staff_user)

    result = _purchase(partner, member, "100.00")

    assert result.points_awarded == 100
    assert Donation.objects.count() == 0
    assert factories.wallet(member).balance == 100


def test_round_up_never_fails_the_earn_of_a_member_in_debt(member, partner, other_partner, charity):
    # Given a member whose wallet went negative after a refund
    earned = factories.earn(member, partner, 500)
    factories.burn(member, other_partner, 500)
    factories.reverse(earned)
    services.giving_preferences_update(member=member, round_up_charity=charity, round_up_percent=50)

    # When they earn 100: it repays the debt, there is nothing to give
    result = _purchase(partner, member, "100.00")

    assert result.points_awarded == 100
    assert Donation.objects.count() == 0
    assert factories.wallet(member).balance == -400


# --------------------------------------------------------------------------- instead of expiry


def test_due_points_are_given_instead_of_expiring(partner, charity, programme):
    # Given two members with points that expired yesterday; one gives them instead
    past = timezone.now() - timedelta(days=2 * 365 + 30)
    giver, keeper = factories.member(), factories.member()
    for member in (giver, keeper):
        factories.earn(member, partner, 400, now=past)
        factories.earn(member, partner, 100)  # fresh points, not due
    services.giving_preferences_update(member=giver, expiry_charity=charity)

    # When the nightly job runs (giving first, then the sweep)
    outcome = expire_with_giving.delay().get()

    # Then the giver's due points went to the charity as a donation with a receipt
    assert outcome == {"given": 400, "expired": 400}
    donation = Donation.objects.get()
    assert (donation.member, donation.points, donation.source) == (giver, 400, "expiry")
    assert donation.receipt_number.startswith("CR-")
    assert not LedgerTransaction.objects.filter(member=giver, kind="expire").exists()
    assert factories.wallet(giver).balance == 100
    # and the other member's expired as before
    assert LedgerTransaction.objects.get(member=keeper, kind="expire").member_points == -400
    assert factories.wallet(keeper).balance == 100
    assert not PointLot.objects.filter(remaining__gt=0, expires_at__lte=timezone.now()).exists()
    assert ledger_check().ok

    # and a second run gives nothing more
    assert expire_with_giving.delay().get() == {"given": 0, "expired": 0}


def test_points_expire_when_the_chosen_charity_is_suspended(partner, charity, staff_user):
    past = timezone.now() - timedelta(days=2 * 365 + 30)
    member = factories.member()
    factories.earn(member, partner, 400, now=past)
    services.giving_preferences_update(member=member, expiry_charity=charity)
    services.charity_set_status(charity=charity, status="suspended", changed_by=staff_user)

    assert expire_with_giving.delay().get() == {"given": 0, "expired": 400}
    assert Donation.objects.count() == 0
    assert GivingPreference.objects.get(member=member).expiry_charity == charity  # kept


def test_held_points_are_neither_given_nor_expired(partner, charity):
    past = timezone.now() - timedelta(days=2 * 365 + 30)
    member = factories.member()
    factories.earn(member, partner, 400, now=past)
    factories.hold(member, partner, 150)
    services.giving_preferences_update(member=member, expiry_charity=charity)

    assert services.expiring_points_donate() == 250
    assert Donation.objects.get().points == 250


def test_the_beat_schedule_runs_giving_before_expiry():
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["expire-due-lots"]
    assert entry["task"] == "charity.tasks.expire_with_giving"


def test_under_the_inactivity_policy_an_inactive_members_points_are_given(
    partner, charity, programme
):
    programme.expiry_policy = "inactivity"
    programme.expiry_months = 12
    programme.save()
    member = factories.member()
    factories.earn(member, partner, 300, now=timezone.now() - timedelta(days=400))
    services.giving_preferences_update(member=member, expiry_charity=charity)

    assert expire_with_giving.delay().get() == {"given": 300, "expired": 0}
    assert factories.wallet(member).balance == 0
    assert Donation.objects.get().source == Donation.Source.EXPIRY

"""Commercial terms with effective dates: every transaction is priced at the terms in force
when it happened; history is never repriced."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from coalition.errors import ErrorCode, NotFound
from coalition.money import Money
from partners import selectors, services
from partners.models import CommercialTerms
from tests import factories


@pytest.fixture
def brand(db):
    """A partner onboarded at issuance 0.0100 / redemption 0.0080 per point."""
    partner, _key = factories.onboarded_partner()
    return partner


def test_terms_changed_mid_day_price_each_side_at_its_own_terms(brand, member):
    # Given a member with 5000 points and new terms from one hour from now on
    factories.earn(member, brand, 5000)
    change = timezone.now() + timedelta(hours=1)
    services.terms_set(
        partner=brand, issuance_price="0.0120", redemption_price="0.0100", valid_from=change
    )
    before, after = change - timedelta(minutes=1), change + timedelta(minutes=1)

    # When 1000 points are redeemed a minute before and a minute after the change
    early = services.points_redeem(
        partner=brand,
        idempotency_key="till-1",
        member_number=member.member_number,
        points=1000,
        reference="r1",
        now=before,
    )
    late = services.points_redeem(
        partner=brand,
        idempotency_key="till-2",
        member_number=member.member_number,
        points=1000,
        reference="r2",
        now=after,
    )

    # Then each is worth its own terms' redemption price
    assert early.discount == Money(Decimal("8.00"), "USD")
    assert late.discount == Money(Decimal("10.00"), "USD")
    assert selectors.terms_at(partner=brand, moment=before).redemption_price == Decimal("0.008")
    assert selectors.terms_at(partner=brand, moment=after).issuance_price == Decimal("0.012")
    assert services.redemption_discount(partner=brand, points=1000, at=change) == Money(
        Decimal("10.00"), "USD"
    )
    # And the terms in force earlier are still there, unchanged
    assert list(brand.terms.order_by("valid_from").values_list("redemption_price", flat=True)) == [
        Decimal("0.008"),
        Decimal("0.010"),
    ]


def test_new_terms_cannot_start_in_the_past(brand):
    # Given a partner with terms
    count = CommercialTerms.objects.count()

    # When new terms are set to start yesterday
    error = factories.assert_refused_all(
        ErrorCode.INVALID,
        lambda: services.terms_set(
            partner=brand,
            issuance_price="0.02",
            redemption_price="0.01",
            valid_from=timezone.now() - timedelta(days=1),
        ),
        field="validFrom",
    )

    # Then they are refused, and history is untouched
    assert "past" in error.message
    assert CommercialTerms.objects.count() == count


def test_two_terms_at_the_same_moment_are_refused(brand):
    moment = timezone.now() + timedelta(days=1)
    services.terms_set(
        partner=brand, issuance_price="0.02", redemption_price="0.01", valid_from=moment
    )
    factories.assert_refused_all(
        ErrorCode.INVALID,
        lambda: services.terms_set(
            partner=brand, issuance_price="0.03", redemption_price="0.01", valid_from=moment
        ),
        field="validFrom",
    )


def test_redemption_above_issuance_is_refused_unless_allowed(brand):
    # When terms reimburse more per redeemed point than the partner pays per issued point
    factories.assert_refused_all(
        ErrorCode.INVALID,
        lambda: services.terms_set(partner=brand, issuance_price="0.01", redemption_price="0.02"),
        field="redemptionPrice",
    )

    # Then only the operator's explicit allowance lets them through
    terms = services.terms_set(
        partner=brand,
        issuance_price="0.01",
        redemption_price="0.02",
        allow_redemption_above_issuance=True,
    )
    assert terms.redemption_price > terms.issuance_price
    assert selectors.terms_at(partner=brand, moment=timezone.now()).pk == terms.pk


@pytest.mark.parametrize(
    ("issuance", "redemption", "field"),
    [
        ("-0.01", "0", "issuancePrice"),
        ("0.01", "-0.001", "redemptionPrice"),
        ("abc", "0.01", "issuancePrice"),
        ("0.0100001", "0.01", "issuancePrice"),
    ],
)
def test_bad_prices_are_invalid(brand, issuance, redemption, field):
    factories.assert_refused_all(
        ErrorCode.INVALID,
        lambda: services.terms_set(
            partner=brand, issuance_price=issuance, redemption_price=redemption
        ),
        field=field,
    )


def test_no_terms_at_a_moment_before_the_first_is_not_found(db):
    # Given a partner whose only terms start tomorrow (created without the onboarding service)
    partner = factories.PartnerFactory()
    start = timezone.now() + timedelta(days=1)
    services.terms_set(
        partner=partner, issuance_price="0.01", redemption_price="0.01", valid_from=start
    )

    # Then nothing prices a transaction today
    with pytest.raises(NotFound):
        selectors.terms_at(partner=partner, moment=timezone.now())

"""The points liability: outstanding points, their cost at current prices weighted by where
points were redeemed in the last 90 days, breakage realised in the last 12 months."""

from datetime import timedelta
from decimal import Decimal

import pytest

from coalition import services as ledger
from partners.services import terms_set
from settlement import selectors, services
from tests import factories

from .conftest import days, make_partner

pytestmark = pytest.mark.django_db


def test_liability_weights_current_prices_by_recent_redemptions(
    settlement_programme, base_time, post, finance
):
    """Outstanding 9,000 (one wallet 6,000 of which 500 held, another 3,000).
    Last 90 days: 3,000 redeemed at Alpha (current price 0.008, it was 0.007 then),
    1,000 at Beta (0.009), 1,000 donated (0.01); a burn 100 days ago does not count.
    Cost per point (3,000 x 0.008 + 1,000 x 0.009 + 1,000 x 0.01) / 5,000 = 0.0086;
    estimated cost 9,000 x 0.0086 = 77.40."""
    now = base_time + timedelta(seconds=1)
    alpha = make_partner("ALPHA", issuance="0.01", redemption="0.007", valid_from=now - days(200))
    beta = make_partner("BETA", issuance="0.01", redemption="0.009", valid_from=now - days(200))
    terms_set(partner=alpha, issuance_price="0.01", redemption_price="0.008", valid_from=base_time)
    charity = factories.CharityFactory()
    rich, other = factories.member(), factories.member()
    post.earn(rich, alpha, 13_000, now - days(150))
    post.burn(rich, beta, 2_000, now - days(100))  # outside the window
    post.burn(rich, alpha, 3_000, now - days(30))
    post.burn(rich, beta, 1_000, now - days(20))
    post.earn(other, beta, 3_000, now - days(10))
    post.donate(rich, charity, 1_000, now - days(5))
    assert factories.wallet(rich).balance == 6_000
    ledger.hold_authorize(
        caller=f"partner:{alpha.pk}", idempotency_key=factories.key("hold"), member=rich,
        partner=alpha, points=500, now=now - timedelta(minutes=5),
    )  # fmt: skip

    result = selectors.liability(now=now)

    assert (result.outstanding_points, result.held_points) == (9_000, 500)
    assert result.cost_per_point == Decimal("0.008600")
    assert result.estimated_cost == Decimal("77.40")
    assert result.currency == "USD"
    assert {w.label: (w.points, w.price) for w in result.weights} == {
        "partner ALPHA": (3_000, Decimal("0.008")),
        "partner BETA": (1_000, Decimal("0.009")),
        "donations": (1_000, Decimal("0.01")),
    }


def test_without_recent_redemptions_the_plain_average_of_current_prices(
    settlement_programme, base_time, post
):
    now = base_time
    alpha = make_partner("ALPHA", issuance="0.01", redemption="0.008", valid_from=now - days(9))
    make_partner("BETA", issuance="0.01", redemption="0.006", valid_from=now - days(9))
    post.earn(factories.member(), alpha, 1_000, now - days(1))

    result = selectors.liability(now=now)

    assert result.cost_per_point == Decimal("0.007000")
    assert result.estimated_cost == Decimal("7.00")


def test_breakage_realised_over_the_last_twelve_months(
    settlement_programme, base_time, post, finance
):
    now = base_time
    alpha = make_partner("ALPHA", issuance="0.01", redemption="0.008", valid_from=now - days(500))
    old, recent = factories.member(), factories.member()
    post.earn(old, alpha, 700, now - days(450))
    post.expire(now - days(400))  # 700 expired more than a year ago
    post.earn(recent, alpha, 1_000, now - days(90))
    post.expire(now - days(30))  # 1,000 expired this year
    run = services.run_create(period_end=now - days(1), created_by=finance)
    assert run.expired_points == 1_700 and run.breakage_revenue == Decimal("17.00")

    result = selectors.liability(now=now)

    assert result.breakage_points_12m == 1_000
    assert result.breakage_revenue_12m == Decimal("17.00")  # the run ended within the year
    assert result.outstanding_points == 0 and result.estimated_cost == Decimal("0.00")

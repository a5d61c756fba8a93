import pytest

from coalition import selectors, services
from coalition.errors import ErrorCode
from tests import factories


def test_earn_then_burn_moves_points_and_ties(member, partner, other_partner):
    factories.earn(member, partner, 500)
    factories.burn(member, other_partner, 200)

    assert selectors.member_balance(member=member).spendable == 300
    assert selectors.ledger_check().ok


def test_burn_more_than_balance_is_refused_and_writes_nothing(member, partner):
    factories.earn(member, partner, 100)
    with pytest.raises(services.InsufficientPoints) as refused:
        factories.burn(member, partner, 101)
    assert refused.value.code == ErrorCode.INSUFFICIENT_POINTS
    assert member.transactions.count() == 1

"""The referral bonus: neither member's history names the other member (a member number is
enough to redeem points at a till)."""

import pytest

from coalition.models import LedgerTransaction
from tests import factories

pytestmark = pytest.mark.django_db


def test_neither_bonus_names_a_member_number(programme, partner):
    # Given a referral bonus and a member referred by another
    programme.referral_bonus_points = 200
    programme.save()
    referrer = factories.member()
    referee = factories.member(referred_by=referrer)

    # When the referee makes a first purchase
    factories.purchase(partner, referee, "10.00")

    # Then each gets a bonus whose reference names neither member
    bonuses = LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.BONUS)
    references = dict(bonuses.values_list("member_id", "reference"))
    assert set(references) == {referrer.pk, referee.pk}
    for reference in references.values():
        assert reference == "referral bonus"
        assert referee.member_number not in reference
        assert referrer.member_number not in reference

"""What a reversal (a partner's refund, an operator's donation refund) does beyond mirroring
its original: the round-up donation of a refunded earn, points of a refunded earn that had
already expired, refunds to the closed wallet of an erased member, and the promotion and
referral rewards a refunded purchase triggered. After every scenario the ledger check passes
and every sum ties (entries, charities' accounts and donations, campaigns, budgets)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone

from charity.models import Donation, MatchingCampaign
from charity.services import causes_seed, donation_refund, giving_preferences_update
from coalition import services
from coalition.models import Account, Entry, LedgerTransaction, Member, PointLot
from coalition.selectors import ledger_check
from partners.models import Promotion, PromotionAward, ReferralReward
from partners.services import partner_transaction_reverse
from tests import factories

pytestmark = pytest.mark.django_db

Kind = LedgerTransaction.Kind
T0 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
AFTER_EXPIRY = T0 + timedelta(days=25 * 31)  # the default lifetime is 24 months


@pytest.fixture(autouse=True)
def _causes(db):
    causes_seed()


@pytest.fixture
def sponsor(db):
    return factories.PartnerFactory(name="Sponsor")


def purchase(partner, member, amount, **kwargs):
    return factories.purchase(partner, member, amount, **kwargs).transaction


def refund(txn, points=None, **kwargs):
    """The partner refunds (part of) one of its transactions through its own service."""
    return partner_transaction_reverse(
        partner=txn.partner,
        idempotency_key=factories.key("refund"),
        transaction_id=txn.pk,
        points=points,
        **kwargs,
    )


def account(kind, **lookup) -> int:
    """The balance of the accounts of that kind (and partner / charity), from their entries."""
    entries = Entry.objects.filter(
        account__kind=kind, **{f"account__{k}": v for k, v in lookup.items()}
    )
    return entries.aggregate(total=Sum("points"))["total"] or 0


def balance(member) -> int:
    return factories.wallet(member).balance


def assert_books_tie():
    """The ledger check passes, and what charities, campaigns and budgets say ties with it."""
    report = ledger_check()
    assert report.ok, report.problems
    assert (Entry.objects.aggregate(total=Sum("points"))["total"] or 0) == 0
    live = Donation.objects.filter(refunded_at__isnull=True)
    for donation in Donation.objects.all():
        assert donation.refunded_at is None or donation.refund_transaction_id is not None
    charity_ids = set(Donation.objects.values_list("charity_id", flat=True))
    for charity_id in charity_ids:
        given = live.filter(charity_id=charity_id).aggregate(
            points=Sum("points"), matched=Sum("matched_points")
        )
        assert account("charity_received", charity_id=charity_id) == (given["points"] or 0) + (
            given["matched"] or 0
        )
    for campaign in MatchingCampaign.objects.all():
        matched = live.filter(campaign=campaign).aggregate(total=Sum("matched_points"))["total"]
        assert campaign.matched_points == (matched or 0)
        assert account("partner_issued", partner_id=campaign.sponsor_id) == -(matched or 0)
    for promotion in Promotion.objects.filter(budget_points__isnull=False):
        awarded = PromotionAward.objects.filter(promotion=promotion).aggregate(total=Sum("points"))
        assert promotion.awarded_points == (awarded["total"] or 0)


# --------------------------------------------------------------------------- 1. round-up


def test_a_full_refund_of_an_earn_refunds_its_round_up_and_the_match(
    programme, member, partner, charity, sponsor
):
    # Given a member who gives 10 % of each earn, matched 1:1 by a sponsor
    campaign = factories.campaign(sponsor, charity=charity)
    giving_preferences_update(member=member, round_up_charity=charity, round_up_percent=10)
    earned = purchase(partner, member, "100.00")
    donation = Donation.objects.get()
    assert (donation.points, donation.matched_points, balance(member)) == (10, 10, 90)

    # When the partner refunds the purchase in full
    refund(earned)

    # Then the round-up is refunded through the donation refund path: the receipt is marked
    # refunded, the points come back before the earn is taken back, the match is taken back
    donation.refresh_from_db()
    assert donation.refunded_at is not None
    assert donation.refund_transaction.reversal_of_id == donation.transaction_id
    assert donation.match_refund_transaction.reversal_of_id == donation.match_transaction_id
    assert balance(member) == 0
    assert list(PointLot.objects.filter(member=member).values_list("remaining", flat=True)) == [0]
    campaign.refresh_from_db()
    assert campaign.matched_points == 0
    assert account("charity_received", charity_id=charity.pk) == 0
    assert account("partner_issued", partner_id=sponsor.pk) == 0
    assert account("partner_issued", partner_id=partner.pk) == 0
    # And the member can spend again
    factories.earn(member, partner, 5)
    factories.burn(member, partner, 5)
    assert_books_tie()


def test_a_partial_refund_refunds_the_same_share_of_the_round_up(
    programme, member, partner, charity, sponsor
):
    # Given 255 points earned, 25 of them given (10 %), matched 1:1
    campaign = factories.campaign(sponsor, charity=charity)
    giving_preferences_update(member=member, round_up_charity=charity, round_up_percent=10)
    earned = purchase(partner, member, "255.00")
    first = Donation.objects.get()
    assert (first.points, balance(member)) == (25, 230)

    # When the partner refunds 100 of the 255 points
    refund(earned, 100)

    # Then the charity keeps floor(25 × 155 / 255) = 15 points: the first receipt is
    # refunded and a new one is issued for the 15 (same gift date, price and campaign), the
    # member gets 10 back, and the match shrinks in proportion
    first.refresh_from_db()
    assert first.refunded_at is not None
    kept = Donation.objects.get(refunded_at__isnull=True)
    assert (kept.points, kept.matched_points, kept.campaign_id) == (15, 15, campaign.pk)
    assert kept.receipt_number != first.receipt_number
    assert (kept.created_at, kept.donation_price) == (first.created_at, first.donation_price)
    assert kept.source == Donation.Source.ROUND_UP
    assert balance(member) == 230 - 100 + 10
    campaign.refresh_from_db()
    assert campaign.matched_points == 15
    assert account("charity_received", charity_id=charity.pk) == 30
    assert_books_tie()

    # When the rest is refunded
    refund(earned)

    # Then nothing of the round-up is left with the charity, and the wallet is empty
    assert not Donation.objects.filter(refunded_at__isnull=True).exists()
    assert balance(member) == 0
    assert account("charity_received", charity_id=charity.pk) == 0
    assert_books_tie()


def test_a_round_up_already_claimed_by_settlement_stays_with_the_charity(
    programme, member, partner, charity, staff_user
):
    from settlement.models import SettlementClaim, SettlementRun

    # Given a round-up of 10 that a settlement run has claimed for the charity
    giving_preferences_update(member=member, round_up_charity=charity, round_up_percent=10)
    earned = purchase(partner, member, "100.00")
    donation = Donation.objects.get()
    run = SettlementRun.objects.create(
        period_end=datetime(2099, 1, 1, tzinfo=UTC), currency="USD", created_by=staff_user
    )
    SettlementClaim.objects.create(transaction=donation.transaction, run=run)

    # When the purchase is refunded in full
    refund(earned)

    # Then the donation stands and the member owes its 10 points (documented rule)
    donation.refresh_from_db()
    assert donation.refunded_at is None
    assert balance(member) == -10
    assert_books_tie()


def test_a_round_up_that_cannot_be_reissued_is_left_whole(programme, member, partner, charity):
    # Given a member in debt (-30 after another refund), with a round-up of 50 on an earn of 100
    giving_preferences_update(member=member, round_up_charity=charity, round_up_percent=50)
    earned = purchase(partner, member, "100.00")
    factories.burn(member, partner, 50)
    other = factories.earn(member, partner, 30)
    factories.burn(member, partner, 30)
    refund(other)
    assert balance(member) == -30

    # When 20 points of the earn are refunded: the charity's share would be 40, which the
    # wallet cannot give again even with the 50 back
    refund(earned, 20)

    # Then the reversal itself goes through and the donation stays as it was
    assert Donation.objects.get().refunded_at is None
    assert balance(member) == -50
    assert_books_tie()


# --------------------------------------------------------------------------- 2. expired points


def _expire(now=AFTER_EXPIRY) -> LedgerTransaction:
    services.points_expire_due(now=now)
    return LedgerTransaction.objects.filter(kind=Kind.EXPIRE).latest("id")


def test_refunding_an_expired_earn_takes_the_points_back_from_breakage(programme, member, partner):
    # Given 100 points earned, all expired into breakage
    earned = factories.earn(member, partner, 100, now=T0)
    expiry = _expire()
    assert (balance(member), account("breakage")) == (0, 100)

    # When the partner refunds the purchase
    reversal = factories.reverse(earned, now=AFTER_EXPIRY + timedelta(days=1))

    # Then the member is not charged again: the points come back out of breakage
    assert balance(member) == 0
    assert account("breakage") == 0
    assert account("partner_issued", partner_id=partner.pk) == 0
    # The refund itself still takes all 100 (tiers and statements see it whole); the expiry
    # it undoes is a reversal of the EXPIRE transaction, breakage to wallet
    assert reversal.member_points == -100
    unexpired = LedgerTransaction.objects.get(reversal_of=expiry)
    assert unexpired.member_points == 100
    assert unexpired.metadata["reversal"] == reversal.pk
    # And the next earn is the member's to spend
    factories.earn(member, partner, 40, now=AFTER_EXPIRY + timedelta(days=2))
    assert balance(member) == 40
    assert_books_tie()


def test_only_the_spent_share_of_a_refunded_expired_earn_is_the_members(
    programme, member, partner, other_partner
):
    # Given 100 earned, 30 spent, 70 expired
    earned = factories.earn(member, partner, 100, now=T0)
    factories.burn(member, other_partner, 30, now=T0 + timedelta(days=1))
    _expire()

    # When the earn is refunded in full
    factories.reverse(earned, now=AFTER_EXPIRY)

    # Then the member owes the 30 they spent, and breakage gives back the 70
    assert balance(member) == -30
    assert account("breakage") == 0
    assert_books_tie()


def test_partial_refunds_of_an_expired_earn_and_the_members_other_points(
    programme, member, partner
):
    # Given 100 expired points from one earn, and 50 fresh points from a later one
    earned = factories.earn(member, partner, 100, now=T0)
    _expire()
    factories.earn(member, partner, 50, now=AFTER_EXPIRY)

    # When 40 of the expired earn are refunded, then the rest
    factories.reverse(earned, 40, now=AFTER_EXPIRY)
    assert (balance(member), account("breakage")) == (50, 60)
    factories.reverse(earned, now=AFTER_EXPIRY)

    # Then breakage gave back exactly what it took, never more; the fresh points stay
    assert (balance(member), account("breakage")) == (50, 0)
    assert services.reversible_points(earned) == 0
    assert_books_tie()


def test_refunding_an_earn_still_held_takes_it_from_the_wallet_not_from_breakage(
    programme, member, partner
):
    # Given an earn of 100 at T0 and another, older one of 100 that expired
    old = factories.earn(member, partner, 100, now=T0 - timedelta(days=40))
    fresh = factories.earn(member, partner, 100, now=T0)
    _expire(now=T0 + timedelta(days=24 * 31 - 39))  # only the old lot is due
    assert (balance(member), account("breakage")) == (100, 100)

    # When the fresh (unexpired) earn is refunded, breakage is not touched
    factories.reverse(fresh, now=T0 + timedelta(days=24 * 31 - 38))
    assert (balance(member), account("breakage")) == (0, 100)
    assert services.reversible_points(old) == 100
    assert_books_tie()


# --------------------------------------------------------------------------- 3. erased members


def test_a_refunded_burn_of_an_erased_member_goes_to_breakage(
    programme, member, partner, other_partner, staff_user
):
    # Given a member who earned 300, redeemed 100 at another partner, and was erased
    factories.earn(member, partner, 300)
    burn = factories.burn(member, other_partner, 100)
    services.member_erase(member=member, staff_user=staff_user)
    assert (balance(member), account("breakage")) == (0, 200)

    # When the other partner refunds the redemption
    reversal = refund(burn)

    # Then the partner's side is reversed as for anyone (it gives back what it was paid),
    # and the points go to breakage, not into the closed, anonymous wallet
    assert reversal.member_points == 100
    assert account("partner_redeemed", partner_id=other_partner.pk) == 0
    assert balance(member) == 0
    assert account("breakage") == 300
    forfeit = LedgerTransaction.objects.filter(kind=Kind.EXPIRE).latest("id")
    assert (forfeit.member_points, forfeit.metadata["reason"]) == (-100, "closed")
    assert forfeit.metadata["reversal"] == reversal.pk
    assert_books_tie()


def test_a_staff_refund_of_an_erased_members_donation_goes_to_breakage(
    programme, member, partner, charity, staff_user
):
    # Given an erased member who had given 150 points to a charity
    factories.earn(member, partner, 400)
    donation = factories.give(member, charity, 150)
    services.member_erase(member=member, staff_user=staff_user)

    # When staff refund the donation
    donation_refund(donation=donation, refunded_by=staff_user, reason="charity closed")

    # Then the receipt is refunded, the charity gives the points back, and they go to breakage
    donation.refresh_from_db()
    assert donation.refunded_at is not None
    assert balance(member) == 0
    assert account("charity_received", charity_id=charity.pk) == 0
    assert account("breakage") == 400
    assert_books_tie()


def test_a_refunded_earn_of_an_erased_member_takes_back_what_erasure_forfeited(
    programme, member, partner, other_partner, staff_user
):
    # Given a member who earned 300, spent 100 and was erased (200 forfeited)
    earned = factories.earn(member, partner, 300)
    factories.burn(member, other_partner, 100)
    services.member_erase(member=member, staff_user=staff_user)

    # When the earn is refunded in full
    refund(earned)

    # Then breakage gives back the forfeited 200; the 100 spent stay a debt of record
    assert account("breakage") == 0
    assert balance(member) == -100
    assert account("partner_issued", partner_id=partner.pk) == 0
    assert Member.objects.get(pk=member.pk).status == Member.Status.CLOSED
    assert_books_tie()


def test_a_suspended_members_refund_stays_in_the_wallet(programme, member, partner):
    factories.earn(member, partner, 300)
    burn = factories.burn(member, partner, 100)
    services.member_set_status(member=member, status=Member.Status.SUSPENDED)

    refund(burn)

    assert (balance(member), account("breakage")) == (300, 0)
    assert_books_tie()


# --------------------------------------------------------------------------- 4. rewards


@pytest.fixture
def once_per_member_bonus(programme, partner):
    """A bonus of 50 points, once per member, with a budget of 500."""
    return factories.promotion(
        partner=partner,
        kind=Promotion.Kind.FIXED_BONUS,
        bonus_points=50,
        per_member_limit=1,
        budget_points=500,
    )


def test_a_full_refund_releases_the_promotions_limit_and_budget(
    member, partner, once_per_member_bonus
):
    # Given a once-per-member bonus of 50 with a budget of 500
    promo = once_per_member_bonus
    earned = purchase(partner, member, "100.00")
    assert (earned.member_points, PromotionAward.objects.count()) == (150, 1)

    # When the purchase is refunded in full
    refund(earned)

    # Then the promotion is as if it had never been awarded to this purchase
    promo.refresh_from_db()
    assert promo.awarded_points == 0
    assert not PromotionAward.objects.exists()
    assert balance(member) == 0
    # And the member's next purchase gets it
    again = purchase(partner, member, "100.00")
    assert again.member_points == 150
    assert_books_tie()


def test_a_partial_refund_keeps_the_promotion_award(member, partner, once_per_member_bonus):
    promo = once_per_member_bonus
    earned = purchase(partner, member, "100.00")

    refund(earned, 100)

    promo.refresh_from_db()
    assert (promo.awarded_points, PromotionAward.objects.count()) == (50, 1)
    assert purchase(partner, member, "100.00").member_points == 100
    assert_books_tie()


@pytest.fixture
def referral(programme):
    programme.referral_bonus_points = 200
    programme.save()
    referrer = factories.member()
    referee = factories.member(referred_by=referrer)
    return referrer, referee


def test_a_refunded_qualifying_purchase_claws_the_referral_bonus_back(partner, referral):
    # Given a referee whose first purchase (10 points) gave both members 200
    referrer, referee = referral
    earned = purchase(partner, referee, "10.00")
    assert (balance(referee), balance(referrer)) == (210, 200)

    # When that purchase is refunded in full within the clawback window
    refund(earned)

    # Then both bonuses are taken back; the bonus stays used (once only)
    assert (balance(referee), balance(referrer)) == (0, 0)
    assert account("operator_marketing") == 0
    assert ReferralReward.objects.filter(referee=referee).exists()
    assert purchase(partner, referee, "10.00").member_points == 10
    assert (balance(referee), balance(referrer)) == (10, 0)
    assert_books_tie()


def test_a_referral_clawback_never_takes_a_wallet_below_zero(partner, other_partner, referral):
    # Given a referrer who already spent 150 of the 200 bonus
    referrer, referee = referral
    earned = purchase(partner, referee, "10.00")
    factories.burn(referrer, other_partner, 150)

    # When the qualifying purchase is refunded
    refund(earned)

    # Then only the 50 the referrer still has are taken back
    assert balance(referrer) == 0
    assert balance(referee) == 0
    assert_books_tie()


def test_no_clawback_after_the_window_nor_for_a_later_purchase(partner, referral):
    referrer, referee = referral
    first = purchase(partner, referee, "10.00")
    second = purchase(partner, referee, "20.00")

    # A later purchase is not the qualifying one
    refund(second)
    assert (balance(referee), balance(referrer)) == (210, 200)
    # The qualifying one, refunded after the window, keeps the bonuses too
    refund(first, now=timezone.now() + timedelta(days=31))
    assert (balance(referee), balance(referrer)) == (200, 200)
    assert_books_tie()


def test_a_partial_refund_of_the_qualifying_purchase_keeps_the_referral_bonus(partner, referral):
    referrer, referee = referral
    earned = purchase(partner, referee, "10.00")

    refund(earned, 5)

    assert (balance(referee), balance(referrer)) == (205, 200)
    assert_books_tie()


def test_a_retried_refund_replays_without_side_effects_twice(programme, member, partner, charity):
    giving_preferences_update(member=member, round_up_charity=charity, round_up_percent=10)
    earned = purchase(partner, member, "100.00")
    kwargs = {"partner": partner, "idempotency_key": "refund-1", "transaction_id": earned.pk}

    first = partner_transaction_reverse(**kwargs)
    before = (LedgerTransaction.objects.count(), list(Donation.objects.values()))
    again = partner_transaction_reverse(**kwargs)

    assert again.pk == first.pk
    assert (LedgerTransaction.objects.count(), list(Donation.objects.values())) == before
    assert Account.objects.get(member=member).balance == 0
    assert_books_tie()


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_every_side_effect_commits_under_the_databases_ledger_rules(
    programme, partner, other_partner, charity, sponsor, staff_user
):
    # Given, each write committed on its own (the commit-time ledger triggers run): a
    # matched round-up, an expired earn, an erased member, a referral
    programme.referral_bonus_points = 200
    programme.save()
    factories.campaign(sponsor, charity=charity)
    giver, expired, erased, referrer = (factories.member() for _ in range(4))
    referee = factories.member(referred_by=referrer)
    giving_preferences_update(member=giver, round_up_charity=charity, round_up_percent=10)
    rounded = purchase(partner, giver, "255.00")
    old = factories.earn(expired, partner, 100, now=T0)
    _expire()
    factories.earn(erased, partner, 300)
    burn = factories.burn(erased, other_partner, 100)
    services.member_erase(member=erased, staff_user=staff_user)
    qualifying = purchase(partner, referee, "10.00")

    # When the partners refund all of it, the round-up in two steps
    refund(rounded, 100)
    refund(rounded)
    factories.reverse(old, now=AFTER_EXPIRY)
    refund(burn)
    refund(qualifying)

    # Then every wallet is where the rules put it, and the books tie
    assert [balance(m) for m in (giver, expired, erased, referrer, referee)] == [0, 0, 0, 0, 0]
    assert account("breakage") == 300
    assert account("charity_received", charity_id=charity.pk) == 0
    assert_books_tie()

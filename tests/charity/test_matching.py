"""Matching campaigns: the sponsor issues matching points into the charity's account, up to
its caps, never more, whatever the concurrency."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from charity import services
from charity.models import Donation, MatchingCampaign
from coalition.errors import ErrorCode
from coalition.models import Account, Entry, LedgerTransaction
from coalition.selectors import account_balance, ledger_check
from tests import factories


def _account(kind, **owner) -> int:
    account = Account.objects.filter(kind=kind, **owner).first()
    return account_balance(account_id=account.pk) if account else 0


@pytest.mark.django_db
def test_a_one_to_one_campaign_matches_a_donation(rich_member, charity, sponsor):
    # Given a 1:1 campaign for this charity
    campaign = factories.campaign(sponsor, charity=charity, ratio="1", cap_points=1000)

    # When the member gives 300 points
    donation = factories.give(rich_member, charity, 300)

    # Then the sponsor issued 300 matching points straight into the charity's account
    assert donation.matched_points == 300
    assert donation.campaign == campaign
    match = donation.match_transaction
    assert match.kind == LedgerTransaction.Kind.MATCH
    assert match.partner_id == sponsor.pk
    assert match.charity_id == charity.pk
    assert match.member_id is None and match.member_points == 0
    assert _account("partner_issued", partner=sponsor) == -300
    assert _account("charity_received", charity=charity) == 600
    assert factories.wallet(rich_member).balance == 700  # the member pays only their own
    campaign.refresh_from_db()
    assert campaign.matched_points == 300
    assert ledger_check().ok


@pytest.mark.django_db
def test_a_two_to_one_campaign_stops_at_its_cap(rich_member, charity, sponsor):
    campaign = factories.campaign(sponsor, charity=charity, ratio="2", cap_points=500)

    first = factories.give(rich_member, charity, 200)  # wants 400
    second = factories.give(rich_member, charity, 200)  # wants 400, 100 left
    third = factories.give(rich_member, charity, 200)  # nothing left

    assert [first.matched_points, second.matched_points, third.matched_points] == [400, 100, 0]
    assert third.campaign is None and third.match_transaction is None
    campaign.refresh_from_db()
    assert campaign.matched_points == campaign.cap_points == 500


@pytest.mark.django_db
def test_a_fractional_ratio_rounds_down(rich_member, charity, sponsor):
    factories.campaign(sponsor, charity=charity, ratio="0.5", cap_points=1000)

    assert factories.give(rich_member, charity, 101).matched_points == 50


@pytest.mark.django_db
def test_the_per_member_cap(rich_member, charity, sponsor, partner):
    factories.campaign(sponsor, charity=charity, cap_points=10_000, per_member_cap_points=250)
    other = factories.member()
    factories.earn(other, partner, 1000)

    assert factories.give(rich_member, charity, 200).matched_points == 200
    assert factories.give(rich_member, charity, 200).matched_points == 50
    assert factories.give(rich_member, charity, 200).matched_points == 0
    assert factories.give(other, charity, 200).matched_points == 200


@pytest.mark.django_db
def test_a_cause_campaign_matches_every_charity_of_the_cause(rich_member, sponsor):
    health = factories.CharityFactory(cause="health")
    arts = factories.CharityFactory(cause="arts")
    factories.campaign(sponsor, cause="health", cap_points=1000)

    assert factories.give(rich_member, health, 100).matched_points == 100
    assert factories.give(rich_member, arts, 100).matched_points == 0


@pytest.mark.django_db
def test_a_charity_campaign_goes_before_a_cause_campaign(rich_member, charity, sponsor):
    cause_wide = factories.campaign(sponsor, cause=charity.cause, cap_points=1000)
    own = factories.campaign(factories.PartnerFactory(), charity=charity, cap_points=150)

    first = factories.give(rich_member, charity, 100)
    second = factories.give(rich_member, charity, 100)  # 50 left on its own campaign
    third = factories.give(rich_member, charity, 100)

    assert (first.campaign, first.matched_points) == (own, 100)
    assert (second.campaign, second.matched_points) == (own, 50)
    assert (third.campaign, third.matched_points) == (cause_wide, 100)


@pytest.mark.django_db
def test_no_match_outside_the_window_or_when_inactive(rich_member, charity, sponsor):
    now = timezone.now()
    factories.campaign(
        sponsor, charity=charity, starts_at=now - timedelta(days=9), ends_at=now - timedelta(days=1)
    )
    factories.campaign(
        sponsor, charity=charity, starts_at=now + timedelta(days=1), ends_at=now + timedelta(days=9)
    )
    inactive = factories.campaign(sponsor, charity=charity)
    MatchingCampaign.objects.filter(pk=inactive.pk).update(active=False)

    assert factories.give(rich_member, charity, 100).matched_points == 0


@pytest.mark.django_db
def test_a_suspended_sponsor_matches_nothing(rich_member, charity, sponsor):
    factories.campaign(sponsor, charity=charity)
    sponsor.status = "suspended"
    sponsor.save()

    assert factories.give(rich_member, charity, 100).matched_points == 0


@pytest.mark.django_db
def test_refunding_a_matched_donation_takes_the_match_back(
    rich_member, charity, sponsor, staff_user
):
    campaign = factories.campaign(sponsor, charity=charity, cap_points=1000)
    donation = factories.give(rich_member, charity, 300)

    services.donation_refund(donation=donation, refunded_by=staff_user, reason="duplicate")

    donation.refresh_from_db()
    assert donation.match_refund_transaction.reversal_of_id == donation.match_transaction_id
    assert _account("partner_issued", partner=sponsor) == 0
    assert _account("charity_received", charity=charity) == 0
    campaign.refresh_from_db()
    assert campaign.matched_points == 0  # the cap is free again
    assert ledger_check().ok


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ratio": "0"}, "ratio"),
        ({"ratio": "abc"}, "ratio"),
        ({"cap_points": 0}, "capPoints"),
        ({"per_member_cap_points": -1}, "perMemberCapPoints"),
        ({"cause": "health"}, "charity"),  # both a charity and a cause
    ],
)
def test_campaign_bad_input(charity, sponsor, kwargs, field):
    factories.assert_charity_refused(
        ErrorCode.INVALID,
        lambda: factories.campaign(sponsor, charity=charity, **kwargs),
        field=field,
    )


@pytest.mark.django_db
def test_match_ledger_service_refuses_bad_input(charity, sponsor):
    from coalition.services import points_match

    factories.assert_refused(
        ErrorCode.INVALID,
        lambda: points_match(
            caller="system:matching",
            idempotency_key="m",
            sponsor=sponsor,
            charity=charity,
            points=0,
        ),
    )
    sponsor.status = "suspended"
    factories.assert_refused(
        ErrorCode.INVALID_STATE,
        lambda: points_match(
            caller="system:matching",
            idempotency_key="m",
            sponsor=sponsor,
            charity=charity,
            points=5,
        ),
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_cap_is_never_exceeded_under_concurrent_donations(partner, charity, sponsor):
    # Given 20 members who each give 100 points at once to a 1:1 campaign capped at 1,050
    members = [factories.member() for _ in range(20)]
    for member in members:
        factories.earn(member, partner, 200)
    campaign = factories.campaign(sponsor, charity=charity, ratio="1", cap_points=1050)

    # When they all donate at the same moment, each on its own connection
    outcomes = factories.run_concurrently(
        20, lambda index: factories.give(members[index], charity, 100).pk, timeout=120
    )

    # Then every donation went through, and exactly the cap was matched — never more
    assert [status for status, _ in outcomes] == ["ok"] * 20, outcomes
    campaign.refresh_from_db()
    assert campaign.matched_points == 1050
    matched = Donation.objects.aggregate(total=Sum("matched_points"))["total"]
    assert matched == 1050
    issued = Entry.objects.filter(
        transaction__kind="match", account__kind="partner_issued", account__partner=sponsor
    ).aggregate(total=Sum("points"))["total"]
    assert issued == -1050
    assert (
        sorted(Donation.objects.values_list("matched_points", flat=True))
        == [0] * 9 + [50] + [100] * 10
    )
    assert Decimal(campaign.ratio) == Decimal("1")
    assert ledger_check().ok


def split_moment(name: str, moment) -> dict[str, str]:
    """A date and time as the admin's split widget posts them."""
    local = timezone.localtime(moment)
    return {f"{name}_0": local.strftime("%Y-%m-%d"), f"{name}_1": local.strftime("%H:%M:%S")}


def test_an_admin_edit_never_writes_back_a_stale_matched_count(
    rich_member, charity, sponsor, monkeypatch
):
    from django.contrib.auth import get_user_model
    from django.test import Client

    from charity.admin import MatchingCampaignAdmin, MatchingCampaignForm

    # Given a campaign the admin has loaded, and a donation matched after that
    campaign = factories.campaign(sponsor, charity=charity, ratio="1", cap_points=1000)
    stale = MatchingCampaign.objects.get(pk=campaign.pk)
    factories.give(rich_member, charity, 300)
    assert MatchingCampaign.objects.get(pk=campaign.pk).matched_points == 300
    form = MatchingCampaignForm(instance=stale)
    data = {name: form[name].value() for name in form.fields}
    data = {name: "" if value is None else value for name, value in data.items()}

    # When the operator renames it from the form holding the old count
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("op", password="x-Str0ng-pass"))
    monkeypatch.setattr(MatchingCampaignAdmin, "get_object", lambda *args, **kwargs: stale)
    response = client.post(
        f"/admin/charity/matchingcampaign/{campaign.pk}/change/",
        {
            **data,
            "name": "Spring match",
            **split_moment("starts_at", stale.starts_at),
            **split_moment("ends_at", stale.ends_at),
        },  # fmt: skip
    )

    # Then the name changed and the count still holds the donation matched meanwhile
    assert response.status_code == 302
    saved = MatchingCampaign.objects.get(pk=campaign.pk)
    assert (saved.name, saved.matched_points) == ("Spring match", 300)

"""Receipt numbers are unique and consecutive, also when donations race; the printable
receipt, statement and donation list are the member's own only."""

import re
from datetime import UTC, datetime

import pytest
from django.test import Client

from charity.models import Donation, ReceiptSequence
from tests import factories


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_receipt_numbers_are_unique_and_gap_free_under_concurrency(partner, charity):
    # Given 20 members, and one donation that fails (it must not use up a number)
    members = [factories.member() for _ in range(20)]
    for member in members:
        factories.earn(member, partner, 150)
    year = datetime.now(UTC).year

    def work(index):
        points = 1000 if index == 7 else 100  # member 7 has too few points: refused
        return factories.give(members[index], charity, points).receipt_number

    # When they all give at once
    outcomes = factories.run_concurrently(20, work, timeout=120)

    # Then 19 donations got the numbers 1..19 of the year, each once
    succeeded = [value for status, value in outcomes if status == "ok"]
    assert len(succeeded) == 19, outcomes
    assert outcomes[7][0] == "error"
    assert sorted(succeeded) == [f"CR-{year}-{n:06d}" for n in range(1, 20)]
    assert ReceiptSequence.objects.get(year=year).last == 19
    assert Donation.objects.count() == 19


# --------------------------------------------------------------------------- pages


@pytest.fixture
def receipt(rich_member, charity):
    return factories.give(rich_member, charity, 250)


def _portal_client(member) -> Client:
    """A browser logged in to the member portal as `member`."""
    from coalition.services import member_set_password

    member_set_password(member=member, password="Giving-2026!")
    client = Client()
    response = client.post(
        "/portal/login/", {"email": member.email, "password": "Giving-2026!", "next": "/portal/"}
    )
    assert response.status_code == 302, response.content
    return client


@pytest.mark.django_db
def test_a_member_prints_their_own_receipt(rich_member, receipt, charity):
    response = _portal_client(rich_member).get(f"/charity/receipts/{receipt.receipt_number}/")

    assert response.status_code == 200
    page = response.content.decode()
    assert receipt.receipt_number in page
    assert charity.name in page
    assert charity.registration_number in page
    assert "250" in page
    assert "2.50 USD" in page
    assert "Not yet paid" in page


@pytest.mark.django_db
def test_another_members_receipt_is_not_found(receipt, partner):
    stranger = factories.member()

    response = _portal_client(stranger).get(f"/charity/receipts/{receipt.receipt_number}/")

    assert response.status_code == 404


@pytest.mark.django_db
def test_an_unknown_or_malformed_receipt_is_not_found(rich_member):
    client = _portal_client(rich_member)

    assert client.get("/charity/receipts/CR-2026-999999/").status_code == 404
    assert client.get("/charity/receipts/nonsense/").status_code == 404


@pytest.mark.django_db
def test_without_a_session_the_member_is_sent_to_log_in(receipt):
    response = Client().get(f"/charity/receipts/{receipt.receipt_number}/")

    assert response.status_code == 302
    assert response["Location"].startswith("/portal/login/")


@pytest.mark.django_db
def test_a_member_token_opens_the_members_own_receipt_only(rich_member, receipt):
    from api.core.auth import member_token_issue

    token, _ = member_token_issue(rich_member)
    stranger_token, _ = member_token_issue(factories.member())
    url = f"/charity/receipts/{receipt.receipt_number}/"

    assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {stranger_token}").status_code == 404
    assert Client().get(url, HTTP_AUTHORIZATION="Bearer cm_forged").status_code == 401


@pytest.mark.django_db
def test_the_annual_statement_lists_the_years_donations(rich_member, charity):
    factories.give(rich_member, charity, 100, now=datetime(2026, 2, 1, tzinfo=UTC))
    factories.give(rich_member, charity, 200, now=datetime(2026, 11, 1, tzinfo=UTC))
    factories.give(rich_member, charity, 300, now=datetime(2027, 1, 5, tzinfo=UTC))
    client = _portal_client(rich_member)

    page = client.get("/charity/statements/2026/").content.decode()

    assert "CR-2026-000001" in page and "CR-2026-000002" in page
    assert "CR-2027-000001" not in page
    assert "3.00 USD" in page  # 300 points at 0.01
    listing = client.get("/charity/donations/").content.decode()
    assert len(re.findall(r"/charity/receipts/CR-\d{4}-\d{6}/", listing)) == 3
    assert "/charity/statements/2027/" in listing and "/charity/statements/2026/" in listing


@pytest.mark.django_db
def test_the_impact_page_is_public_and_lists_verified_charities(rich_member, charity):
    from charity.models import Charity

    suspended = factories.CharityFactory(name="Hidden Trust")
    factories.give(rich_member, charity, 400)
    factories.give(rich_member, suspended, 100)
    Charity.objects.filter(pk=suspended.pk).update(status=Charity.Status.SUSPENDED)

    response = Client().get("/charity/impact/")

    assert response.status_code == 200
    page = response.content.decode()
    assert charity.name in page and "400" in page
    assert "Hidden Trust" not in page
    assert "Environment" in page

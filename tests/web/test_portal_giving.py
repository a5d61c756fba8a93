"""Giving in the member portal: donate with the value shown first, automatic giving, and
receipts. Every refusal is a message, and nothing is written."""

from decimal import Decimal

import pytest

from charity.models import Donation, GivingPreference
from tests import factories

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-9"
KEY = "7f1f0b7e-3c59-4a5e-9a55-0d6f3b1f2a10"


@pytest.fixture
def giver(programme, partner):
    programme.donation_price = Decimal("0.015")
    programme.min_donation_points = 100
    programme.save()
    member = factories.member(password=PASSWORD)
    factories.earn(member, partner, 2000)
    return member


@pytest.fixture
def logged_in(client, giver):
    client.post("/portal/login/", {"email": giver.email, "password": PASSWORD})
    return client


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_giving_pages_need_a_member_session(client, db):
    for path in ("/portal/give/", "/portal/give/confirm/", "/portal/receipts/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/portal/login/")


def test_the_value_is_shown_before_confirming_and_nothing_is_given_yet(logged_in, charity):
    page = logged_in.get("/portal/give/").content.decode()
    assert charity.name in page and "2000" in page

    review = logged_in.get("/portal/give/confirm/", {"charity": charity.pk, "points": "500"})
    assert review.status_code == 200
    assert f"500 points = $7.50 to {charity.name}" in review.content.decode()
    assert not Donation.objects.exists()


def test_confirming_gives_once_even_when_the_form_is_sent_twice(logged_in, giver, charity):
    form = {"charity": charity.pk, "points": "500", "idempotency_key": KEY}
    done = logged_in.post("/portal/give/confirm/", form, follow=True)
    logged_in.post("/portal/give/confirm/", form)  # a double click

    donation = Donation.objects.get()
    assert (donation.member, donation.charity, donation.points) == (giver, charity, 500)
    assert donation.value == Decimal("7.50")
    assert done.redirect_chain[-1][0] == "/portal/receipts/"
    assert any(donation.receipt_number in m and "$7.50" in m for m in _messages(done))
    assert donation.receipt_number in done.content.decode()


@pytest.mark.parametrize(
    ("points", "message"),
    [("5000", "point"), ("50", "At least 100 points")],
)
def test_a_refused_donation_is_a_message_and_writes_nothing(logged_in, charity, points, message):
    before = factories.charity_state()
    response = logged_in.post(
        "/portal/give/confirm/",
        {"charity": charity.pk, "points": points, "idempotency_key": KEY},
        follow=True,
    )
    errors = _messages(response)
    assert errors and any(message in m for m in errors)
    assert factories.charity_state() == before


def test_a_suspended_charity_refuses_and_bad_input_is_caught(logged_in, charity):
    from charity.models import Charity

    before = factories.charity_state()
    bad_points = logged_in.post(
        "/portal/give/confirm/",
        {"charity": charity.pk, "points": "lots", "idempotency_key": KEY},
        follow=True,
    )
    assert any("whole number" in m for m in _messages(bad_points))
    no_key = logged_in.post(
        "/portal/give/confirm/", {"charity": charity.pk, "points": "200"}, follow=True
    )
    assert any("expired" in m for m in _messages(no_key))
    assert factories.charity_state() == before
    Charity.objects.filter(pk=charity.pk).update(status=Charity.Status.SUSPENDED)
    before = factories.charity_state()
    suspended = logged_in.post(
        "/portal/give/confirm/",
        {"charity": charity.pk, "points": "200", "idempotency_key": KEY},
        follow=True,
    )
    assert any("suspended" in m for m in _messages(suspended))
    assert factories.charity_state() == before


def test_automatic_giving_is_saved_through_the_service(logged_in, giver, charity):
    other = factories.CharityFactory(name="Second Charity")
    response = logged_in.post(
        "/portal/give/settings/",
        {"round_up_charity": charity.pk, "round_up_percent": "10", "expiry_charity": other.pk},
        follow=True,
    )
    assert any("saved" in m for m in _messages(response))
    preference = GivingPreference.objects.get(member=giver)
    assert (preference.round_up_charity, preference.round_up_percent) == (charity, 10)
    assert preference.expiry_charity == other
    page = logged_in.get("/portal/give/").content.decode()
    assert 'value="10"' in page

    # switching round-up off keeps the expiry choice
    logged_in.post(
        "/portal/give/settings/",
        {"round_up_charity": "", "round_up_percent": "", "expiry_charity": other.pk},
    )
    preference.refresh_from_db()
    assert preference.round_up_charity is None and preference.round_up_percent is None


@pytest.mark.parametrize(
    ("percent", "message"),
    [("0", "1 to 100"), ("101", "1 to 100"), ("ten", "1 to 100"), ("", "both a charity")],
)
def test_bad_automatic_giving_is_refused_and_nothing_changes(logged_in, charity, percent, message):
    before = factories.charity_state()
    response = logged_in.post(
        "/portal/give/settings/",
        {"round_up_charity": charity.pk, "round_up_percent": percent, "expiry_charity": ""},
        follow=True,
    )
    assert any(message in m for m in _messages(response))
    assert factories.charity_state() == before


def test_receipts_link_to_the_receipt_its_download_and_the_annual_statement(
    logged_in, giver, charity
):
    donation = factories.give(giver, charity, 300)
    page = logged_in.get("/portal/receipts/").content.decode()
    assert f"/charity/receipts/{donation.receipt_number}/" in page
    assert f"/portal/receipts/{donation.receipt_number}/download/" in page
    assert f"/charity/statements/{donation.created_at.year}/" in page
    assert "$4.50" in page

    download = logged_in.get(f"/portal/receipts/{donation.receipt_number}/download/")
    assert download.status_code == 200
    assert download["Content-Disposition"] == (
        f'attachment; filename="receipt-{donation.receipt_number}.html"'
    )
    assert donation.receipt_number in download.content.decode()
    assert logged_in.get(f"/charity/receipts/{donation.receipt_number}/").status_code == 200


def test_another_members_receipt_is_not_found(logged_in, charity, partner):
    stranger = factories.member()
    factories.earn(stranger, partner, 500)
    theirs = factories.give(stranger, charity, 200)
    response = logged_in.get(f"/portal/receipts/{theirs.receipt_number}/download/")
    assert response.status_code == 404

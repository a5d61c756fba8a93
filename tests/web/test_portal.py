"""The member portal, as a member uses it in a browser (Django test client)."""

import pytest

from coalition import services
from partners.models import Reward
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def member_with_password(programme):
    return factories.member(password="correct-horse-9")


def _login(client, member, password="correct-horse-9"):
    return client.post("/portal/login/", {"email": member.email, "password": password})


def test_member_logs_in_and_sees_balance_and_history(client, member_with_password, partner):
    # Given a member who earned 750 points and held 50 at a till
    factories.earn(member_with_password, partner, 750)
    services.hold_authorize(
        caller="partner:1",
        idempotency_key="h1",
        member=member_with_password,
        partner=partner,
        points=50,
        reference="till-1",
    )
    # When they log in
    response = _login(client, member_with_password)
    assert response.status_code == 302 and response["Location"] == "/portal/"
    home = client.get("/portal/")
    # Then they see their spendable balance and what is held
    assert home.status_code == 200
    assert b'data-testid="balance">700<' in home.content
    assert b"50 held at a till" in home.content
    history = client.get("/portal/history/")
    assert partner.name.encode() in history.content and b"+750" in history.content


def test_wrong_password_is_refused_with_the_same_message_as_unknown_email(
    client, member_with_password
):
    wrong = _login(client, member_with_password, password="nope-nope-nope")
    unknown = client.post("/portal/login/", {"email": "nobody@example.com", "password": "x"})
    assert wrong.status_code == unknown.status_code == 200
    assert b"don&#x27;t match an active member" in wrong.content
    assert b"don&#x27;t match an active member" in unknown.content
    assert client.get("/portal/").status_code == 302  # still logged out


def test_password_change_logs_out_existing_sessions(client, member_with_password):
    _login(client, member_with_password)
    assert client.get("/portal/").status_code == 200
    services.member_set_password(member=member_with_password, password="another-pass-1")
    assert client.get("/portal/").status_code == 302


def test_suspended_member_cannot_log_in(client, member_with_password):
    services.member_set_status(member=member_with_password, status="suspended")
    _login(client, member_with_password)
    assert client.get("/portal/").status_code == 302


def test_redeeming_a_reward_burns_points_and_takes_stock(client, member_with_password, partner):
    factories.earn(member_with_password, partner, 1000)
    reward = Reward.objects.create(partner=partner, name="Coffee", points_cost=300, stock=2)
    _login(client, member_with_password)
    page = client.get("/portal/rewards/")
    assert b"Coffee" in page.content

    response = client.post(
        "/portal/rewards/", {"reward_id": reward.pk, "idempotency_key": "abc"}, follow=True
    )
    # a double submit of the same form redeems once
    client.post("/portal/rewards/", {"reward_id": reward.pk, "idempotency_key": "abc"})

    assert b"Redeemed Coffee for 300 points" in response.content
    reward.refresh_from_db()
    assert reward.stock == 1
    assert (
        member_with_password.wallet.__class__.objects.get(member=member_with_password).balance
        == 700
    )


def test_reward_too_expensive_is_refused_and_nothing_changes(client, member_with_password, partner):
    factories.earn(member_with_password, partner, 100)
    reward = Reward.objects.create(partner=partner, name="Flight", points_cost=5000, stock=1)
    _login(client, member_with_password)
    response = client.post(
        "/portal/rewards/", {"reward_id": reward.pk, "idempotency_key": "k"}, follow=True
    )
    assert b"spendable points" in response.content
    reward.refresh_from_db()
    assert reward.stock == 1


def test_open_redirect_after_login_is_refused(client, member_with_password):
    response = client.post(
        "/portal/login/",
        {
            "email": member_with_password.email,
            "password": "correct-horse-9",
            "next": "https://evil.example.com/",
        },
    )
    assert response["Location"] == "/portal/"

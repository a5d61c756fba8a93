"""The portal's log-in counts guesses with the API's memberLogin limits — the same counters,
per client address and per email — so neither path gets around the other."""

import pytest
from django.test import override_settings

from tests import factories
from tests.api.conftest import Api

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-9"
LIMITED = b"Too many login attempts"
API_LOGIN = """
mutation Login($input: MemberLoginInput!) {
  memberLogin(input: $input) { token errors { field code message } }
}"""


@pytest.fixture
def member(programme):
    return factories.member(password=PASSWORD)


def portal_login(client, email, password=PASSWORD, address="203.0.113.7"):
    return client.post(
        "/portal/login/", {"email": email, "password": password}, REMOTE_ADDR=address
    )


def api_login(client, email, password=PASSWORD, address="203.0.113.7"):
    response = Api(client)(
        API_LOGIN, {"input": {"email": email, "password": password}}, REMOTE_ADDR=address
    )
    return response.payload("memberLogin")


@override_settings(RATE_LIMITS={"default": "1000/m", "memberLogin:email": "3/m"})
def test_guessing_one_account_is_limited_whatever_the_address(client, member):
    # Given three wrong guesses at one email, from three addresses
    for number in range(3):
        wrong = portal_login(client, member.email, "wrong-password", address=f"198.51.100.{number}")
        assert wrong.status_code == 200 and LIMITED not in wrong.content

    # When the right password is tried, from yet another address, in another case
    response = portal_login(client, member.email.upper(), address="198.51.100.9")

    # Then the page says it is limited, and the member is not logged in
    assert response.status_code == 429
    assert LIMITED in response.content and b"try again in" in response.content
    assert client.get("/portal/").status_code == 302
    # And another email from the same addresses is not limited
    other = factories.member(password=PASSWORD)
    assert portal_login(client, other.email, address="198.51.100.0").status_code == 302


@override_settings(RATE_LIMITS={"default": "1000/m", "memberLogin": "3/m"})
def test_guessing_from_one_address_is_limited_whatever_the_email(client, member):
    for number in range(3):
        portal_login(client, f"nobody{number}@example.com", "wrong-password")

    response = portal_login(client, member.email)

    assert response.status_code == 429 and LIMITED in response.content
    assert client.get("/portal/").status_code == 302
    # Another address still logs in
    assert portal_login(client, member.email, address="192.0.2.1").status_code == 302


@override_settings(RATE_LIMITS={"default": "1000/m", "memberLogin:email": "4/m"})
def test_guesses_through_the_api_count_at_the_portal_and_back(client, member):
    # Given two guesses through the API and two through the portal, at one email
    for number in range(2):
        refused = api_login(client, member.email, "wrong", address=f"198.51.100.{number}")
        assert [e["code"] for e in refused["errors"]] == ["PERMISSION_DENIED"]
        portal_login(client, member.email, "wrong", address=f"198.51.100.{10 + number}")

    # Then both paths are limited for that email
    assert portal_login(client, member.email, address="192.0.2.1").status_code == 429
    limited = api_login(client, member.email, address="192.0.2.2")
    assert limited["token"] is None
    assert [e["code"] for e in limited["errors"]] == ["LIMIT_EXCEEDED"]


@override_settings(RATE_LIMITS={"default": "1000/m", "memberLogin": "2/m"})
def test_api_calls_from_an_address_count_at_the_portal(client, member):
    for _ in range(2):
        api_login(client, "nobody@example.com", "wrong")

    assert portal_login(client, member.email).status_code == 429

"""memberLogin: email and password for an expiring member token."""

import pytest
from django.test import override_settings

from coalition.models import Member
from tests.api.conftest import CALLERS, PASSWORD, everything, member_with_password

LOGIN = """
mutation Login($input: MemberLoginInput!) {
  memberLogin(input: $input) {
    token expiresAt
    member { memberNumber balance transactions(first: 5) { totalCount } }
    errors { field code message }
  }
}"""
ME = "{ me { memberNumber balance } }"
REFUSED = [
    {"field": None, "code": "PERMISSION_DENIED", "message": "The email or the password is wrong"}
]


def login(api, email, password=PASSWORD, **kwargs):
    return api.mutate("memberLogin", LOGIN, {"email": email, "password": password}, **kwargs)


@pytest.mark.django_db
def test_a_member_logs_in_and_uses_the_token(api, shopper):
    payload = login(api, shopper.email.upper())

    assert payload["errors"] == []
    assert payload["token"].startswith("cm_")
    assert payload["expiresAt"]
    # The member sees itself in the answer, history included.
    assert payload["member"] == {
        "memberNumber": shopper.member_number,
        "balance": 1000,
        "transactions": {"totalCount": 1},
    }
    me = api(ME, token=payload["token"])
    assert me.data == {"me": {"memberNumber": shopper.member_number, "balance": 1000}}


@pytest.mark.django_db
def test_wrong_password_and_unknown_email_are_the_same_refusal(api, shopper):
    wrong = login(api, shopper.email, "not-the-password")
    unknown = login(api, "nobody@example.com")

    assert wrong == unknown == {"token": None, "expiresAt": None, "member": None, "errors": REFUSED}


@pytest.mark.django_db
def test_a_member_without_a_password_cannot_log_in(api, programme):
    from tests import factories

    member = factories.member()

    assert login(api, member.email, "")["errors"] == REFUSED


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["suspended", "closed"])
def test_a_member_who_is_not_active_is_refused(api, shopper, status):
    from coalition.services import member_set_status

    member_set_status(member=shopper, status=status)

    payload = login(api, shopper.email)

    assert payload["token"] is None
    assert [e["code"] for e in payload["errors"]] == ["MEMBER_NOT_ACTIVE"]


@pytest.mark.django_db
def test_a_password_change_revokes_the_tokens(api, shopper):
    token = login(api, shopper.email)["token"]
    Member.objects.filter(pk=shopper.pk).update(token_version=shopper.token_version + 1)

    response = api(ME, token=token)

    assert response.codes == ["PERMISSION_DENIED"]
    assert response.data == {"me": None}
    assert "invalid, expired or revoked" in response.errors[0]["message"]


@pytest.mark.django_db
def test_a_token_expires(api, shopper, monkeypatch):
    import time

    token = login(api, shopper.email)["token"]
    later = time.time() + 25 * 3600
    monkeypatch.setattr("django.core.signing.time.time", lambda: later)

    assert api(ME, token=token).codes == ["PERMISSION_DENIED"]


@pytest.mark.django_db
def test_a_tampered_token_is_refused(api, shopper):
    import base64
    import json

    token = login(api, shopper.email)["token"]
    other = member_with_password()
    payload, stamp, signature = token.removeprefix("cm_").split(":")
    claims = json.dumps({"m": other.pk, "v": other.token_version}, separators=(",", ":"))
    forged_payload = base64.urlsafe_b64encode(claims.encode()).decode().rstrip("=")
    forged = f"cm_{forged_payload}:{stamp}:{signature}"

    assert forged != token

    assert api(ME, token=forged).codes == ["PERMISSION_DENIED"]


@pytest.mark.django_db
@override_settings(RATE_LIMITS={"default": "1000/m", "memberLogin:email": "3/m"})
def test_guessing_one_account_is_limited(api, shopper):
    for _ in range(3):
        assert login(api, shopper.email, "wrong-password")["errors"] == REFUSED

    payload = login(api, shopper.email)  # even the right password, for a while

    assert [e["code"] for e in payload["errors"]] == ["LIMIT_EXCEEDED"]
    assert payload["token"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_anyone_may_try_to_log_in_and_nothing_is_written(api, callers, caller, shopper):
    before = everything()

    payload = login(api, shopper.email, token=callers[caller])

    assert payload["errors"] == []
    assert everything() == before

"""Credentials: partner keys, member tokens, staff tokens (create_staff_token) and the staff
session, resolved once per request."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from api.models import StaffToken
from tests.api.conftest import key_for, staff_token_for

LIABILITY = "{ liability { outstandingPoints } }"  # finance staff only
PARTNERS_AND_ME = "{ partners { code } me { memberNumber } }"


def run_command(*args) -> list[str]:
    out = io.StringIO()
    call_command("create_staff_token", *args, stdout=out)
    return out.getvalue().strip().splitlines()


@pytest.mark.django_db
def test_create_staff_token_creates_a_finance_user_and_prints_the_token(api):
    lines = run_command("--username", "fiona")

    token = lines[-1]
    user = get_user_model().objects.get(username="fiona")
    assert user.is_staff and not user.has_usable_password()
    assert user.groups.filter(name="finance").exists()
    assert all(
        user.has_perm(f"api.{codename}")
        for codename in ("view_members", "view_finance", "manage_settlement", "approve_settlement")
    )
    stored = StaffToken.objects.get(user=user)
    assert token.startswith("cs_") and token not in (stored.digest, stored.prefix)
    assert api(LIABILITY, token=token).data == {"liability": {"outstandingPoints": 0}}
    assert StaffToken.objects.get(pk=stored.pk).last_used_at is not None


@pytest.mark.django_db
def test_a_second_token_for_an_existing_user(staff_user):
    first = run_command("--username", staff_user.username)[-1]
    second = run_command("--username", staff_user.username)[-1]

    assert first != second
    assert StaffToken.objects.filter(user=staff_user).count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("username", ["", "has space", "x" * 151])
def test_a_bad_username_is_refused_and_nothing_is_created(username):
    with pytest.raises(CommandError):
        run_command("--username", username)

    assert not StaffToken.objects.exists()


@pytest.mark.django_db
def test_a_revoked_staff_token_or_a_deactivated_user_is_refused(api, staff_user):
    revoked = staff_token_for(staff_user)
    StaffToken.objects.update(revoked_at="2026-01-01T00:00:00Z")
    assert api(LIABILITY, token=revoked).codes == ["PERMISSION_DENIED"]

    token = staff_token_for(staff_user)
    staff_user.is_active = False
    staff_user.save()
    assert api(LIABILITY, token=token).codes == ["PERMISSION_DENIED"]


@pytest.mark.django_db
def test_a_revoked_partner_key_is_refused(api, brand):
    from partners.models import ApiKey
    from partners.services import api_key_revoke

    api_key_revoke(key=ApiKey.objects.get(partner=brand.partner))

    response = api('{ member(memberNumber: "1") { id } }', token=brand.key)

    assert response.codes == ["PERMISSION_DENIED"]
    assert "invalid, expired or revoked" in response.errors[0]["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Basic dXNlcjpwYXNz", "must be 'Bearer <token>'"),
        ("Bearer", "must be 'Bearer <token>'"),
        ("Bearer cs_nope", "invalid, expired or revoked"),
        ("Bearer ck_live_nope", "invalid, expired or revoked"),
        ("Bearer cm_nope", "invalid, expired or revoked"),
        ("Bearer whatever", "invalid, expired or revoked"),
        ("Bearer " + "x" * 2000, "invalid, expired or revoked"),
    ],
)
def test_a_bad_credential_is_anonymous_with_the_reason(api, header, message):
    response = api(PARTNERS_AND_ME, HTTP_AUTHORIZATION=header)

    assert response.data == {"partners": [], "me": None}  # public fields still answer
    assert response.codes == ["PERMISSION_DENIED"]
    assert message in response.errors[0]["message"]


@pytest.mark.django_db
def test_a_partner_key_with_a_member_query_has_no_me(api, brand):
    assert api(PARTNERS_AND_ME, token=key_for(brand.partner)).codes == ["PERMISSION_DENIED"]


@pytest.mark.django_db
def test_staff_in_the_browser_use_their_session_with_csrf(staff_user):
    from api.management.commands.create_staff_token import finance_group

    staff_user.groups.add(finance_group())
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff_user)
    browser.get("/admin/")  # sets the CSRF cookie
    body = '{"query": "{ liability { outstandingPoints } }"}'

    forged = browser.post("/graphql/", body, content_type="application/json")
    csrf = browser.cookies["csrftoken"].value
    genuine = browser.post(
        "/graphql/", body, content_type="application/json", HTTP_X_CSRFTOKEN=csrf
    )

    assert forged.json()["errors"][0]["extensions"]["code"] == "PERMISSION_DENIED"
    assert genuine.json() == {"data": {"liability": {"outstandingPoints": 0}}}


@pytest.mark.django_db
def test_a_logged_in_non_staff_user_is_anonymous(client, django_user_model):
    user = django_user_model.objects.create_user(username="visitor")
    client.force_login(user)

    response = client.post(
        "/graphql/", '{"query": "{ liability { outstandingPoints } }"}', "application/json"
    )

    assert response.json()["errors"][0]["extensions"]["code"] == "PERMISSION_DENIED"

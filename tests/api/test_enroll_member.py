"""enrollMember: a partner key with the earn scope enrols a member."""

import pytest

from coalition.models import Member
from tests.api.conftest import CALLERS, everything, key_for

ENROLL = """
mutation Enroll($input: EnrollMemberInput!) {
  enrollMember(input: $input) {
    member { id memberNumber displayName status balance tier { code } }
    errors { field code message }
  }
}"""


def enrol_input(**overrides):
    values = {
        "email": "new.member@example.com",
        "displayName": "New Member",
        "password": "long-enough-password",
        "idempotencyKey": "enrol-1",
    }
    values.update(overrides)
    return values


@pytest.mark.django_db
def test_a_partner_enrols_a_member(api, brand):
    payload = api.mutate("enrollMember", ENROLL, enrol_input(), token=brand.key)

    assert payload["errors"] == []
    member = Member.objects.get(email="new.member@example.com")
    assert payload["member"]["memberNumber"] == member.member_number
    assert payload["member"]["status"] == "ACTIVE"
    assert payload["member"]["balance"] == 0
    assert payload["member"]["tier"]["code"] == "BASE"
    assert member.enrolled_by == brand.partner


@pytest.mark.django_db
def test_a_retry_with_the_same_key_returns_the_first_member(api, brand):
    first = api.mutate("enrollMember", ENROLL, enrol_input(), token=brand.key)
    before = everything()

    again = api.mutate("enrollMember", ENROLL, enrol_input(), token=brand.key)

    assert again == first
    assert everything() == before


@pytest.mark.django_db
def test_the_same_key_with_another_payload_is_a_conflict(api, brand):
    api.mutate("enrollMember", ENROLL, enrol_input(), token=brand.key)
    before = everything()

    payload = api.mutate(
        "enrollMember", ENROLL, enrol_input(email="someone.else@example.com"), token=brand.key
    )

    assert payload["member"] is None
    assert payload["errors"] == [
        {
            "field": "input.idempotencyKey",
            "code": "IDEMPOTENCY_CONFLICT",
            "message": "This idempotency key was already used for a different request",
        }
    ]
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": "not-an-email"}, "input.email"),
        ({"displayName": " "}, "input.displayName"),
        ({"password": "short"}, "input.password"),
        ({"birthDate": "31/12/1990"}, "input.birthDate"),
        ({"referralCode": "NOSUCHCODE"}, "input.referralCode"),
        ({"idempotencyKey": ""}, "input.idempotencyKey"),
    ],
)
def test_invalid_input_is_refused_on_its_field(api, brand, overrides, field):
    before = everything()

    payload = api.mutate("enrollMember", ENROLL, enrol_input(**overrides), token=brand.key)

    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("INVALID", field)]
    assert payload["member"] is None
    assert everything() == before


@pytest.mark.django_db
def test_an_email_already_enrolled_is_refused(api, brand, shopper):
    before = everything()

    payload = api.mutate(
        "enrollMember", ENROLL, enrol_input(email=shopper.email.upper()), token=brand.key
    )

    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("INVALID", "input.email")]
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller):
    before = everything()

    payload = api.mutate("enrollMember", ENROLL, enrol_input(), token=callers[caller])

    if caller in ("partner", "other_partner"):
        assert payload["errors"] == []
    else:
        assert [e["code"] for e in payload["errors"]] == ["PERMISSION_DENIED"]
        assert payload["member"] is None
        assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize("scopes", [("burn",), ("read",), ("burn", "read")])
def test_a_key_without_the_earn_scope_is_refused(api, brand, scopes):
    before = everything()
    key = key_for(brand.partner, scopes)
    before["keys"] = everything()["keys"]

    payload = api.mutate("enrollMember", ENROLL, enrol_input(), token=key)

    assert payload["errors"][0]["code"] == "PERMISSION_DENIED"
    assert "earn scope" in payload["errors"][0]["message"]
    assert everything() == before


@pytest.mark.django_db
def test_a_suspended_partner_is_refused(api, brand):
    from partners.services import partner_set_status

    partner_set_status(partner=brand.partner, status="suspended")
    before = everything()

    payload = api.mutate("enrollMember", ENROLL, enrol_input(), token=brand.key)

    assert payload["errors"] == [
        {
            "field": None,
            "code": "PERMISSION_DENIED",
            "message": f"Partner {brand.partner.code} is suspended",
        }
    ]
    assert everything() == before

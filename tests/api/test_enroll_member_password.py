"""enrollMember: a retry is told from another request by its password too, and text that
does not fit the member's columns is INVALID on its field (not an internal error)."""

import pytest
from django.test import override_settings

from coalition import services as ledger
from coalition.models import IdempotencyRecord, Member
from tests.api.conftest import everything
from tests.api.test_enroll_member import ENROLL, enrol_input

CONFLICT = [
    {
        "field": "input.idempotencyKey",
        "code": "IDEMPOTENCY_CONFLICT",
        "message": "This idempotency key was already used for a different request",
    }
]


def enrol(api, brand, **overrides) -> dict:
    """enrollMember by the brand's key, with `enrol_input` changed by ``overrides``."""
    return api.mutate("enrollMember", ENROLL, enrol_input(**overrides), token=brand.key)


def state() -> dict:
    return {
        **everything(),
        "members": list(Member.objects.order_by("id").values_list("id", "email", "password")),
        "records": IdempotencyRecord.objects.count(),
    }


@pytest.mark.django_db
def test_the_same_key_with_another_password_is_a_conflict(api, brand):
    # Given a member enrolled with a password under a key
    first = enrol(api, brand)
    assert first["errors"] == []
    before = state()

    # When the same key is sent with another password
    payload = enrol(api, brand, password="another-password")

    # Then it is refused as a conflict, and nothing changed
    assert payload["member"] is None
    assert payload["errors"] == CONFLICT
    assert state() == before


@pytest.mark.django_db
@pytest.mark.parametrize("password", [None, ""], ids=["no-password", "empty-password"])
def test_a_password_where_there_was_none_is_a_conflict(api, brand, password):
    # Given a member enrolled without a password
    enrol(api, brand, password=password)
    before = state()

    # When the same key is sent with a password
    payload = enrol(api, brand)

    # Then it is a conflict
    assert payload["errors"] == CONFLICT
    assert state() == before


@pytest.mark.django_db
@pytest.mark.parametrize("password", ["long-enough-password", None], ids=["password", "none"])
def test_the_same_password_replays(api, brand, password):
    first = enrol(api, brand, password=password)
    before = state()

    again = enrol(api, brand, password=password)

    assert again == first
    assert state() == before


@pytest.mark.django_db
def test_the_password_is_fingerprinted_with_a_keyed_hash(api, brand):
    # Given an enrolment with a password
    first = enrol(api, brand)
    (record,) = IdempotencyRecord.objects.filter(operation="member_enroll")
    before = state()

    # When the same request is retried under another SECRET_KEY (the old one not kept)
    with override_settings(SECRET_KEY="another-secret-key-" + "x" * 40):
        again = enrol(api, brand)

    # Then the stored fingerprint no longer matches: it depends on the key, so someone
    # holding the table alone cannot test password guesses against it
    assert first["errors"] == []
    assert again["errors"] == CONFLICT
    assert "long-enough-password" not in record.request_hash
    assert state() == before


def _rotate_the_secret_key(settings) -> None:
    """Rotate SECRET_KEY, the old one kept as a fallback."""
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "rotated-secret-key-" + "y" * 40


def _record_as_before_the_upgrade(settings) -> None:
    """Rewrite the enrolment's record with the fingerprint enrolments had before passwords
    were fingerprinted (only whether one was set), as rows already in the database are: the
    member's own password hash then vouches for a retry's password."""
    input_ = enrol_input()
    legacy = ledger.request_fingerprint(
        "member_enroll",
        email=input_["email"].strip().lower(),
        display_name=input_["displayName"],
        password_set=True,
        birth_date=None,
        referral_code=None,
    )
    records = IdempotencyRecord.objects.filter(idempotency_key=input_["idempotencyKey"])
    assert records.update(request_hash=legacy) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "since",
    [_rotate_the_secret_key, _record_as_before_the_upgrade],
    ids=["after-a-secret-key-rotation", "recorded-before-the-upgrade"],
)
def test_a_retry_replays_and_another_password_is_still_a_conflict(api, brand, settings, since):
    # Given an enrolment, then the SECRET_KEY rotated or its record as before the upgrade
    first = enrol(api, brand)
    since(settings)
    before = state()

    # When it is retried with the same password, and with another one
    again = enrol(api, brand)
    other = enrol(api, brand, password="another-password")

    # Then the retry replays; the other password is a conflict; nothing changed
    assert again == first
    assert other["errors"] == CONFLICT
    assert state() == before


# --------------------------------------------------------------------------- lengths


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"displayName": "N" * 201}, "input.displayName"),
        ({"displayName": "N" * 255}, "input.displayName"),
        ({"email": "a" * 243 + "@example.com"}, "input.email"),  # 255 characters
    ],
    ids=["name-201", "name-255", "email-255"],
)
def test_text_longer_than_its_column_is_invalid_on_its_field(api, brand, overrides, field):
    before = state()

    payload = enrol(api, brand, **overrides)

    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("INVALID", field)]
    assert "At most" in payload["errors"][0]["message"]
    assert payload["member"] is None
    assert state() == before


@pytest.mark.django_db(transaction=True)
def test_text_that_just_fits_is_enrolled(api, brand):
    email = "a" * 242 + "@example.com"  # 254 characters, the column's size
    payload = enrol(api, brand, displayName="N" * 200, email=email)

    assert payload["errors"] == []
    assert Member.objects.get(email=email).display_name == "N" * 200

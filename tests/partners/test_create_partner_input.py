"""`manage.py create_partner`: a missing required option, an over-long or malformed text
option is one clear line on standard error, a non-zero exit, and nothing changed
(shared/api/COMMANDS.md)."""

from functools import partial

import pytest
from django.core.management import CommandError

from coalition.errors import InvalidInput
from partners.models import Partner
from partners.services import partner_create
from tests import factories
from tests.partners.test_create_partner_command import (
    GOOD,
    arguments,
    assert_one_clear_line_and_nothing_changed,
    create_partner,
)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"contact_email": "x" * 360}, "--contact-email: At most 254 characters"),
        ({"contact_email": "not-an-email"}, "--contact-email: Not a valid email address"),
        ({"contact_email": "a@b@example.com"}, "--contact-email: Not a valid email address"),
        ({"stripe_account": "acct_" + "a" * 251}, "--stripe-account: At most 255 characters"),
        ({"stripe_customer": "cus_" + "c" * 252}, "--stripe-customer: At most 255 characters"),
        ({"name": "N" * 201}, "--name: A name of 1 to 200 characters is required"),
    ],
    ids=[
        "long-email",
        "not-an-email",
        "two-ats",
        "long-account",
        "long-customer",
        "long-name",
    ],
)
@pytest.mark.django_db(transaction=True)
def test_bad_text_is_one_clear_line_and_changes_nothing(overrides, message):
    assert_one_clear_line_and_nothing_changed(message, **overrides)


@pytest.mark.django_db(transaction=True)
def test_text_that_just_fits_is_stored():
    email = "a" * 242 + "@example.com"  # 254 characters
    account, customer = "acct_" + "a" * 250, "cus_" + "c" * 251  # 255 characters each

    create_partner(contact_email=email, stripe_account=account, stripe_customer=customer)

    partner = Partner.objects.get(code="GROCER")
    assert (partner.contact_email, partner.stripe_account_id) == (email, account)
    assert partner.stripe_customer_id == customer


@pytest.mark.django_db
@pytest.mark.parametrize(
    "option", ["code", "name", "currency", "earn_rate", "issuance_price", "redemption_price"]
)
def test_a_missing_required_option_is_one_line(option):
    from django.core.management import call_command

    flag = f"--{option.replace('_', '-')}"
    given = [f"{name}={value}" for name, value in GOOD.items() if name != flag]

    with pytest.raises(CommandError) as refused:
        call_command("create_partner", *given)

    assert str(refused.value) == f"{flag} is required"
    assert not Partner.objects.exists()


@pytest.mark.django_db
def test_the_service_refuses_a_bad_contact_email_on_its_field():
    with pytest.raises(InvalidInput) as refused:
        partner_create(
            code="GROCER",
            name="Grocer",
            currency="USD",
            earn_rate="1",
            issuance_price="0.01",
            redemption_price="0.008",
            contact_email="x" * 360,
        )
    assert (refused.value.code, refused.value.field) == ("INVALID", "contactEmail")


def test_as_a_real_process_one_line_on_stderr_and_a_non_zero_exit(tmp_path):
    database = tmp_path / "coalition.sqlite3"
    manage = partial(factories.manage_process, env=factories.sqlite_process_env(database))

    assert manage("migrate", "--verbosity=0").returncode == 0

    missing = manage("create_partner", *arguments()[1:])  # no --code
    long_email = manage("create_partner", *arguments(contact_email="x" * 360))

    for refused, text in (
        (missing, "--code is required"),
        (long_email, "--contact-email: At most 254 characters"),
    ):
        assert refused.returncode == 1, refused.stderr
        assert refused.stdout == ""
        (line,) = refused.stderr.strip().splitlines()
        assert text in line

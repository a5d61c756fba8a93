"""`manage.py create_partner`: the operator's onboarding command (see shared/api/COMMANDS.md).
Prints the new API key as its last line; on bad input, one clear line on standard error, a
non-zero exit, and nothing changed."""

import sqlite3
from decimal import Decimal
from functools import partial
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from partners import selectors
from partners.models import CommercialTerms, Partner
from tests import factories

GOOD = {
    "--code": "GROCER",
    "--name": "Corner Grocer",
    "--currency": "USD",
    "--earn-rate": "1",
    "--issuance-price": "0.0100",
    "--redemption-price": "0.0080",
}


def arguments(**overrides) -> list[str]:
    options = {**GOOD, **{f"--{key.replace('_', '-')}": value for key, value in overrides.items()}}
    return [f"{option}={value}" for option, value in options.items()]


def create_partner(**overrides) -> str:
    out = StringIO()
    call_command("create_partner", *arguments(**overrides), stdout=out)
    return out.getvalue()


def assert_one_clear_line_and_nothing_changed(message: str, **overrides) -> None:
    """The command run with ``overrides`` is refused in one line starting with ``message``
    (what is wrong with which option), and no partner or ledger row changed."""
    before = (factories.partner_state(), factories.ledger_state())

    with pytest.raises(CommandError) as refused:
        create_partner(**overrides)

    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)
    assert (factories.partner_state(), factories.ledger_state()) == before


def test_creates_the_partner_with_its_terms_and_prints_its_key_last(db):
    # When the operator onboards a partner
    output = create_partner(stripe_account="acct_123", stripe_customer="cus_456")

    # Then the last line is an API key that works for that partner
    raw_key = output.strip().splitlines()[-1]
    assert raw_key.startswith("ck_live_")
    key = selectors.api_key_authenticate(raw_key=raw_key)
    partner = Partner.objects.get(code="GROCER")
    assert key.partner == partner
    assert (partner.name, partner.currency, partner.earn_rate) == ("Corner Grocer", "USD", 1)
    assert (partner.stripe_account_id, partner.stripe_customer_id) == ("acct_123", "cus_456")
    # And its first terms price everything from the start
    (terms,) = CommercialTerms.objects.filter(partner=partner)
    assert (terms.issuance_price, terms.redemption_price) == (Decimal("0.01"), Decimal("0.008"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"code": "FIRST"}, "--code: A partner with code FIRST already exists"),
        ({"code": "lower case"}, "--code:"),
        ({"currency": "usd"}, "--currency: Unknown currency"),
        ({"currency": "XYZ"}, "--currency: Unknown currency"),
        ({"earn_rate": "lots"}, "--earn-rate: Must be a decimal number"),
        ({"issuance_price": "-0.01"}, "--issuance-price: Must be a number of at least 0"),
        ({"redemption_price": "-1"}, "--redemption-price: Must be a number of at least 0"),
        ({"redemption_price": "0.0200"}, "--redemption-price: The redemption price is above"),
        ({"stripe_account": "not-an-account"}, "--stripe-account: Must look like acct_"),
    ],
    ids=[
        "duplicate-code",
        "bad-code",
        "lower-case-currency",
        "unknown-currency",
        "bad-earn-rate",
        "negative-issuance",
        "negative-redemption",
        "redemption-above-issuance",
        "bad-stripe-account",
    ],
)
def test_bad_input_is_one_clear_line_and_changes_nothing(db, overrides, message):
    # Given a partner FIRST already onboarded
    factories.onboarded_partner(code="FIRST")

    # When the command is run with one bad option, then it says what is wrong with which
    # option, in one line, and nothing changed
    assert_one_clear_line_and_nothing_changed(message, **overrides)


def test_redemption_above_issuance_goes_through_when_explicitly_allowed(db):
    out = StringIO()
    call_command(
        "create_partner",
        *arguments(redemption_price="0.0200"),
        "--allow-redemption-above-issuance",
        stdout=out,
    )
    assert Partner.objects.get(code="GROCER").terms.get().redemption_price == Decimal("0.02")


def test_as_a_real_process_exit_codes_and_stderr(tmp_path):
    """The operator's experience, end to end: a fresh SQLite database, `migrate`, then the
    command twice; standard output, standard error and exit codes as the contract says."""
    database = tmp_path / "coalition.sqlite3"
    manage = partial(factories.manage_process, env=factories.sqlite_process_env(database))

    migrated = manage("migrate", "--verbosity=0")
    assert migrated.returncode == 0, migrated.stderr

    # When the operator onboards a partner
    created = manage("create_partner", *arguments())

    # Then it exits 0 with the key as the last line of standard output
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().splitlines()[-1].startswith("ck_live_")

    # When the same code is onboarded again, or terms are bad
    duplicate = manage("create_partner", *arguments(name="Another"))
    too_generous = manage("create_partner", *arguments(code="OTHER", redemption_price="0.05"))

    # Then each exits non-zero with one line on standard error and nothing on standard output
    for refused, text in (
        (duplicate, "A partner with code GROCER already exists"),
        (too_generous, "--redemption-price: The redemption price is above"),
    ):
        assert refused.returncode != 0
        assert refused.stdout == ""
        (line,) = refused.stderr.strip().splitlines()
        assert text in line
    # And the database holds the one partner, its one set of terms and its one key
    with sqlite3.connect(database) as db:
        counts = [
            db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("partners_partner", "partners_commercialterms", "partners_apikey")
        ]
    assert counts == [1, 1, 1]

"""A small coalition with money to settle, built through the services, for the dashboard's
tests (test client and browser): two brands, a charity, members who earn at one brand, spend
at the other and give, and Stripe objects in the emulator for every counterparty."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.test import override_settings
from django.utils import timezone

from charity.models import Charity
from coalition.models import Member
from partners.models import Partner
from settlement import stripe_gateway as gateway
from tests import factories

MEMBER_PASSWORD = "correct-horse-9"
STAFF_PASSWORD = "x-Str0ng-pass-1"


def stripe_settings(emulator):
    """Point the gateway at the test's emulator (the gateway caches clients per settings)."""
    return override_settings(
        STRIPE_API_BASE=emulator.url,
        STRIPE_API_KEY=emulator.api_key,
        STRIPE_MAX_NETWORK_RETRIES=0,
        STRIPE_TIMEOUT_SECONDS=10,
    )


def _connected_account(emulator, email: str, name: str) -> str:
    create = getattr(gateway, "connected_account_create", None)
    if create is not None:
        return create(email=email, business_name=name)
    account = emulator.client().v1.accounts.create(
        params={
            "type": "express",
            "country": "US",
            "email": email,
            "business_profile": {"name": name},
        }
    )
    return account.id


def _customer_with_card(emulator, email: str, name: str) -> str:
    create = getattr(gateway, "customer_create_with_card", None)
    if create is not None:
        return create(email=email, name=name)
    client = emulator.client()
    customer = client.v1.customers.create(params={"email": email, "name": name})
    method = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    return customer.id


def stripe_onboard(emulator, *, partners=(), charities=()) -> None:
    """Connected accounts (and a customer with a card, for partners) in the emulator."""
    for partner in partners:
        email = f"{partner.code.lower()}@example.com"
        partner.stripe_account_id = _connected_account(emulator, email, partner.name)
        partner.stripe_customer_id = _customer_with_card(emulator, email, partner.name)
        partner.save(update_fields=["stripe_account_id", "stripe_customer_id"])
    for charity in charities:
        charity.stripe_account_id = _connected_account(
            emulator, f"charity{charity.pk}@example.com", charity.name
        )
        charity.save(update_fields=["stripe_account_id"])


def staff(username: str, **extra):
    """An active staff user (finance) with a known password."""
    return factories.finance_staff(username, password=STAFF_PASSWORD, **extra)


@dataclass
class Coalition:
    grocer: Partner
    airline: Partner
    charity: Charity
    member: Member
    others: list[Member] = field(default_factory=list)
    now: datetime = field(default_factory=timezone.now)


def coalition_with_activity(*, now: datetime | None = None) -> Coalition:
    """Earning at the grocer, redeeming at the airline, giving to the charity, over the last
    weeks: a grocer line to collect, an airline and a charity line to pay out."""
    from coalition import services as ledger
    from partners import services as partner_services

    now = now or timezone.now()
    programme = ledger.programme_get()
    programme.min_redemption_points = 1
    programme.min_donation_points = 100
    programme.save()
    grocer, _ = factories.onboarded_partner(code="GROCER", name="Green Grocer")
    airline, _ = factories.onboarded_partner(
        code="AIRLINE", name="Blue Airline", issuance_price="0.0120", redemption_price="0.0100"
    )
    charity = factories.CharityFactory(name="Clean Rivers Fund")
    factories.reward(airline, name="Lounge pass", points_cost=500, stock=10)
    start = now - timedelta(days=20)
    member = ledger.member_create(
        email="ada@example.com",
        display_name="Ada Member",
        password=MEMBER_PASSWORD,
        now=start,
    )
    others = [
        ledger.member_create(email=f"m{n}@example.com", display_name=f"M {n}", now=start)
        for n in range(3)
    ]
    for day, (who, amount) in enumerate(
        [(member, "3000"), (others[0], "2500"), (others[1], "900"), (member, "1200")]
    ):
        at = start + timedelta(days=day * 3, hours=2)
        factories.purchase(grocer, who, amount, occurred_at=at, now=at)
    factories.purchase(
        airline,
        others[2],
        "400",
        occurred_at=start + timedelta(days=4),
        now=start + timedelta(days=4),
    )
    spend_at = now - timedelta(days=3)
    partner_services.points_redeem(
        partner=airline,
        idempotency_key="redeem-1",
        member_number=others[0].member_number,
        points=1800,
        reference="till-1",
        now=spend_at,
    )
    factories.give(others[1], charity, 800, now=spend_at)
    factories.give(others[0], charity, 500, now=spend_at + timedelta(hours=1))
    return Coalition(grocer, airline, charity, member, others, now)


def statement_net(csv_text: str):
    """(description, amount) of a statement's `net` row."""
    import csv
    import io
    from decimal import Decimal

    for row in csv.DictReader(io.StringIO(csv_text)):
        if row["row"] == "net":
            return row["description"], Decimal(row["amount"])
    raise AssertionError(f"no net row in the statement:\n{csv_text}")

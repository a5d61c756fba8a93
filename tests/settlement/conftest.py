"""Settlement fixtures: finance staff (a creator and a second approver), a programme whose
lots live one month, partners with dated terms, and helpers to post ledger activity at a
chosen moment through the coalition services."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from coalition import services as ledger
from coalition.services.matching import points_match
from partners.services import terms_set
from tests import factories


@pytest.fixture
def finance(db):
    """The finance clerk who creates runs."""
    return factories.finance_staff("clerk")


@pytest.fixture
def approver(db):
    """A second finance staff member, who approves."""
    return factories.finance_staff("controller")


@pytest.fixture
def base_time():
    """'Now' for the worked examples, to the second: terms may change from now on only."""
    return timezone.now().replace(microsecond=0)


@pytest.fixture
def settlement_programme(db):
    programme = ledger.programme_get()
    programme.min_redemption_points = 1
    programme.expiry_months = 1
    programme.donation_price = Decimal("0.010000")
    programme.currency = "USD"
    programme.save()
    return programme


def make_partner(code, *, issuance, redemption, valid_from, account="", customer=""):
    """A partner whose first terms start at `valid_from` (which may be in the past)."""
    partner = factories.PartnerFactory(
        code=code, name=f"Brand {code}", stripe_account_id=account, stripe_customer_id=customer
    )
    terms_set(
        partner=partner,
        issuance_price=Decimal(issuance),
        redemption_price=Decimal(redemption),
        valid_from=valid_from,
    )
    return partner


class Ledger:
    """Ledger activity at chosen moments, through the coalition services."""

    def earn(self, member, partner, points, at, *, operator_points=0, kind="earn"):
        return ledger.points_earn(
            caller=f"partner:{partner.pk}",
            idempotency_key=factories.key("earn"),
            member=member,
            partner=partner,
            partner_points=points,
            operator_points=operator_points,
            kind=kind,
            now=at,
        )

    def burn(self, member, partner, points, at):
        return ledger.points_burn(
            caller=f"partner:{partner.pk}",
            idempotency_key=factories.key("burn"),
            member=member,
            partner=partner,
            points=points,
            now=at,
        )

    def donate(self, member, charity, points, at):
        return ledger.points_donate(
            caller=f"member:{member.pk}",
            idempotency_key=factories.key("donate"),
            member=member,
            charity=charity,
            points=points,
            now=at,
        )

    def match(self, sponsor, charity, points, at):
        return points_match(
            caller="system:matching",
            idempotency_key=factories.key("match"),
            sponsor=sponsor,
            charity=charity,
            points=points,
            now=at,
        )

    def reverse(self, txn, points, at):
        return ledger.transaction_reverse(
            caller=f"partner:{txn.partner_id}",
            idempotency_key=factories.key("reverse"),
            transaction_to_reverse=txn,
            points=points,
            now=at,
        )

    def expire(self, at):
        return ledger.points_expire_due(now=at)


@pytest.fixture
def post():
    return Ledger()


def days(n: float) -> timedelta:
    return timedelta(days=n)


# --------------------------------------------------------------------------- Stripe


class StripeBed:
    """Connected accounts and paying customers on the emulator, and what it holds."""

    def __init__(self, emulator):
        self.emulator = emulator
        self.client = emulator.client()

    def account(self) -> str:
        return self.client.v1.accounts.create({"type": "custom", "country": "US"}).id

    def customer(self, card: str = "pm_card_visa") -> str:
        customer = self.client.v1.customers.create({"email": "finance@brand.example"})
        self.set_card(customer.id, card)
        return customer.id

    def set_card(self, customer_id: str, card: str) -> str:
        method = self.client.v1.payment_methods.attach(card, {"customer": customer_id})
        self.client.v1.customers.update(
            customer_id, {"invoice_settings": {"default_payment_method": method.id}}
        )
        return method.id

    def transfers(self, transfer_group: str) -> list:
        page = self.client.v1.transfers.list({"transfer_group": transfer_group, "limit": 100})
        return list(page.auto_paging_iter())

    def charge(self, customer_id: str, amount: int, *, metadata: dict | None = None):
        """A payment of ``amount`` (minor units) from the customer's default card, off
        session and confirmed at once."""
        method = self.client.v1.customers.retrieve(customer_id).invoice_settings
        params = {
            "amount": amount,
            "currency": "usd",
            "customer": customer_id,
            "payment_method": method.default_payment_method,
            "confirm": True,
            "off_session": True,
        }
        if metadata is not None:
            params["metadata"] = metadata
        return self.client.v1.payment_intents.create(params)

    def collect_again(self, run, line, amount: int):
        """A second payment from the collection ``line``'s customer naming the run and the
        line, as a duplicate collection would."""
        return self.charge(
            line.partner.stripe_customer_id,
            amount,
            metadata={
                "settlement_run_reference": str(run.reference),
                "settlement_line": str(line.pk),
            },
        )

    def payments(self, run) -> list:
        page = self.client.v1.payment_intents.list({"limit": 100})
        return [
            p
            for p in page.auto_paging_iter()
            if (p.metadata.to_dict() if p.metadata else {}).get("settlement_run_reference")
            == str(run.reference)
        ]


@pytest.fixture
def stripe_bed(stripe_emulator, settings):
    """The emulator, wiped, as settlement's Stripe. The gateway does not retry by itself
    here (STRIPE_MAX_NETWORK_RETRIES=0), so each injected failure reaches settlement."""
    stripe_emulator.reset()
    settings.STRIPE_API_BASE = stripe_emulator.url
    settings.STRIPE_API_KEY = stripe_emulator.api_key
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.STRIPE_TIMEOUT_SECONDS = 10
    return StripeBed(stripe_emulator)


@pytest.fixture
def stripe_month(stripe_bed, settlement_programme, base_time, post, finance, approver):
    """An approved run with one collection and two pay-outs, all with Stripe ids:

    ISSUER issued 20,000 points at 0.010: collect 200.00 from its customer's card;
    REDEEMER redeemed 5,000 at 0.008: pay out 40.00; a charity got 2,000 donated points at
    0.01: pay out 20.00."""
    from settlement import services

    t0 = base_time
    issuer = make_partner(
        "ISSUER", issuance="0.010", redemption="0.008", valid_from=t0 - days(30),
        customer=stripe_bed.customer(),
    )  # fmt: skip
    redeemer = make_partner(
        "REDEEMER", issuance="0.010", redemption="0.008", valid_from=t0 - days(30),
        account=stripe_bed.account(),
    )  # fmt: skip
    charity = factories.CharityFactory(stripe_account_id=stripe_bed.account())
    member = factories.member()
    post.earn(member, issuer, 20_000, t0 - days(5))
    post.burn(member, redeemer, 5_000, t0 - days(4))
    post.donate(member, charity, 2_000, t0 - days(3))
    run = services.run_create(period_end=t0, created_by=finance)
    services.run_approve(run=run, approved_by=approver)
    run.refresh_from_db()
    return {"run": run, "issuer": issuer, "redeemer": redeemer, "charity": charity}


@pytest.fixture
def executed_run(stripe_bed, stripe_month, finance, django_capture_on_commit_callbacks):
    """`stripe_month`'s run executed against the emulator: completed, and reconciled clean."""
    from settlement import services
    from settlement.models import SettlementRun

    run = stripe_month["run"]
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)
    run.refresh_from_db()
    assert run.status == SettlementRun.Status.COMPLETED and run.reconciliations.get().clean
    return run


def collection_of(run):
    """The run's collection line (`stripe_month`'s issuer pays 200.00)."""
    return run.lines.select_related("partner").get(partner__code="ISSUER")


def kinds(reconciliation) -> list[tuple[str, str | None]]:
    """A reconciliation's differences as sorted (kind, Stripe id) pairs."""
    return sorted((d["kind"], d["stripe_id"]) for d in reconciliation.differences)

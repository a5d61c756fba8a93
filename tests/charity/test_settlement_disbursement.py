"""End to end: a donation is settled to its charity through a run executed against the
local Stripe emulator; the donation then shows the run and the transfer that paid it."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from charity import selectors
from coalition import services as ledger
from tests import factories


@pytest.fixture
def finance(db):
    return factories.finance_staff("finance-maker"), factories.finance_staff("finance-checker")


@pytest.mark.slow
@pytest.mark.django_db
def test_donation_disbursed_by_a_settlement_run_against_the_emulator(
    stripe_emulator, settings, member, charity, sponsor, finance, django_capture_on_commit_callbacks
):
    from settlement.services import run_approve, run_create, run_execute

    # Given the emulator as Stripe, and a charity with a connected account
    stripe_emulator.reset()
    settings.STRIPE_API_BASE = stripe_emulator.url
    settings.STRIPE_API_KEY = stripe_emulator.api_key
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.SETTLEMENT_CHARITY_MINIMUM = "0.00"
    account = stripe_emulator.client().v1.accounts.create(
        params={"type": "express", "country": "US"}
    )
    charity.stripe_account_id = account.id
    charity.save()
    # and a member (operator-funded points: no partner line in the run) who gives 1,500
    ledger.points_earn(
        caller="system:test",
        idempotency_key=factories.key("bonus"),
        member=member,
        operator_points=2000,
        kind="bonus",
    )
    donation = factories.give(member, charity, 1500)
    assert selectors.donation_disbursement(donation) is None

    # When finance creates, approves and executes a run
    maker, checker = finance
    run = run_create(period_end=timezone.now() + timedelta(seconds=1), created_by=maker)
    run_approve(run=run, approved_by=checker)
    with django_capture_on_commit_callbacks(execute=True):
        run_execute(run=run, started_by=maker)

    # Then the donation shows the run and the Stripe transfer that paid the charity
    found = selectors.donation_disbursement(donation)
    assert found is not None, "the run did not claim the donation"
    run_id, transfer_id, paid_at = found
    assert run_id == run.pk
    assert transfer_id and transfer_id.startswith("tr_")
    assert paid_at is not None
    transfer = stripe_emulator.client().v1.transfers.retrieve(transfer_id)
    assert transfer.destination == account.id
    assert transfer.amount == 1500  # 1,500 points × 0.01 USD, in cents
    # and it can no longer be refunded
    assert not selectors.donation_refundable(donation)
    # and the member's receipt says it was paid
    from api.core.auth import member_token_issue

    token, _ = member_token_issue(member)
    page = (
        Client()
        .get(f"/charity/receipts/{donation.receipt_number}/", HTTP_AUTHORIZATION=f"Bearer {token}")
        .content.decode()
    )
    assert "Paid on" in page and transfer_id in page

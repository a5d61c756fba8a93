"""Follow-up jobs of charity and settlement writes go through the transactional outbox
(issue 9): a donation's receipt mail and a settlement approval's statement announcements
are recorded with the write, survive a broker outage, and are delivered exactly once when
the relay runs again; two relays never dispatch the same row, and the relay's lock is
transaction-level (it holds behind PgBouncer in transaction pooling mode)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection, connections, transaction
from django.utils import timezone

from charity.models import Donation
from charity.services import donation_create
from charity.tasks import email_receipt
from coalition import outbox
from coalition.models import OutboxMessage
from partners import webhooks
from partners.models import WebhookEvent
from settlement import services as settlement
from settlement.tasks import announce_statements
from tests import factories
from tests.reliability.conftest import broker_down, celery_broker
from tests.settlement.conftest import Ledger, make_partner


def pending() -> Counter:
    """The follow-up jobs waiting in the outbox, by task name (or topic)."""
    return Counter(
        row.payload.get("task", row.topic)
        for row in OutboxMessage.objects.filter(dispatched_at__isnull=True)
    )


@pytest.fixture
def finance_pair(django_user_model):
    creator = factories.finance_staff("clerk")
    approver = factories.finance_staff("controller")
    return creator, approver


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_receipt_and_settlement_jobs_survive_a_broker_outage_and_run_once(
    programme, charity, finance_pair, counting_receiver
):
    # Given a partner (terms since last month) whose member earned points last week, and
    # who listens for webhooks, and a draft settlement run
    creator, approver = finance_pair
    now = timezone.now()
    partner = make_partner(
        "LISTENER", issuance="0.01", redemption="0.008", valid_from=now - timedelta(days=30)
    )
    member = factories.member()
    Ledger().earn(member, partner, 1_000, now - timedelta(days=7))
    webhooks.endpoint_register(partner=partner, url=counting_receiver.url, idempotency_key="h")
    run = settlement.run_create(period_end=now - timedelta(seconds=1), created_by=creator)
    assert pending() == {}
    mail.outbox.clear()

    # When the broker is down while the member donates and finance approves the run,
    with broker_down():
        donation = donation_create(
            member=member, charity=charity, points=200, idempotency_key="give-1"
        )
        settlement.run_approve(run=run, approved_by=approver)
        # and the periodic relay runs meanwhile,
        assert outbox.outbox_relay() == 0

    # then both writes committed, and their follow-up jobs wait in the outbox: no mail, no
    # statement announcement yet.
    assert Donation.objects.get(pk=donation.pk).receipt_emailed_at is None
    run.refresh_from_db()
    assert run.status == "approved"
    assert pending() == {
        "charity.tasks.email_receipt": 1,
        "settlement.tasks.announce_statements": 1,
    }
    assert "OperationalError" in OutboxMessage.objects.order_by("id").first().last_error
    assert mail.outbox == []
    assert not WebhookEvent.objects.filter(type="settlement.statement_ready").exists()

    # When the broker is back (in-process) and the relay runs, twice,
    with celery_broker(None, eager=True):
        dispatched = outbox.outbox_relay()
        assert outbox.outbox_relay() == 0
        # and every job is delivered again (an at-least-once redelivery),
        assert email_receipt.delay(donation.pk).result is False
        assert announce_statements.delay(run.pk).result == 0

    # then the receipt went out once, to the member, and is marked as sent,
    assert dispatched >= 2  # the two jobs (and the statement webhook, here or nested)
    assert [message.to for message in mail.outbox] == [[member.email]]
    assert donation.receipt_number in mail.outbox[0].subject
    assert Donation.objects.get(pk=donation.pk).receipt_emailed_at is not None
    # and the partner heard once that its statement is ready.
    event = WebhookEvent.objects.get(type="settlement.statement_ready")
    assert counting_receiver.counts() == {f"evt_{event.pk}": 1}
    assert not OutboxMessage.objects.filter(dispatched_at__isnull=True).exists()


@pytest.mark.django_db
def test_a_donation_rolled_back_sends_no_receipt(rich_member_and_charity):
    member, charity = rich_member_and_charity
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        donation_create(member=member, charity=charity, points=100, idempotency_key="r")
        1 / 0  # noqa: B018 - something after the donation fails its transaction

    assert not Donation.objects.exists()
    assert pending() == {}


@pytest.fixture
def rich_member_and_charity(programme, charity, partner):
    member = factories.member()
    factories.earn(member, partner, 1_000)
    return member, charity


@pytest.mark.django_db
def test_the_receipt_job_fails_while_the_mail_server_is_down_and_sends_once_later(
    rich_member_and_charity, monkeypatch
):
    member, charity = rich_member_and_charity
    donation = donation_create(member=member, charity=charity, points=100, idempotency_key="m")
    mail.outbox.clear()

    def refused(*args, **kwargs):
        raise ConnectionRefusedError("mail server down")

    monkeypatch.setattr("django.core.mail.send_mail", refused)
    with pytest.raises(ConnectionRefusedError):
        email_receipt.apply(args=[donation.pk], throw=True, retries=10)
    assert Donation.objects.get(pk=donation.pk).receipt_emailed_at is None  # not marked

    monkeypatch.undo()
    assert email_receipt.apply(args=[donation.pk]).result is True
    assert email_receipt.apply(args=[donation.pk]).result is False
    assert len(mail.outbox) == 1


# --------------------------------------------------------------------------- the relay


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_relays_at_once_never_dispatch_a_row_twice(programme, monkeypatch):
    # Given 40 recorded jobs whose handler is slow (and no relay nudged by their commit)
    monkeypatch.setattr(outbox, "outbox_nudge", lambda: None)
    calls: Counter = Counter()
    guard = threading.Lock()

    def slow(payload):
        with guard:
            calls[payload["n"]] += 1
        threading.Event().wait(0.01)

    outbox.outbox_handler_register("test.slow", slow)
    try:
        for n in range(40):
            outbox.outbox_enqueue("test.slow", {"n": n})

        # When two relays (two database sessions) run at the same moment, small batches,
        start = threading.Barrier(2)
        results = []

        def relay():
            try:
                start.wait(5)
                results.append(outbox.outbox_relay(batch=5))
            finally:
                connections.close_all()

        threads = [threading.Thread(target=relay) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        # (a relay that was locked out returns at once; the other drains the rows)
        results.append(outbox.outbox_relay(batch=5))

        # then every job ran exactly once and is marked dispatched.
        assert calls == {n: 1 for n in range(40)}
        assert sum(results) == 40
        assert not OutboxMessage.objects.filter(dispatched_at__isnull=True).exists()
    finally:
        outbox._handlers.pop("test.slow", None)


class RelayKilled(BaseException):
    """Not an Exception: the relay does not catch it (as a SIGKILL would not be caught)."""


def _advisory_locks_held() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_relay_lock_lives_only_as_long_as_its_transaction(programme, monkeypatch):
    """Behind PgBouncer in transaction pooling mode the next transaction may run on another
    server connection: the relay keeps no session state (no session-level lock) between its
    transactions, and a relay that dies mid-batch leaves no lock behind."""
    monkeypatch.setattr(outbox, "outbox_nudge", lambda: None)  # the test runs the relay
    seen = []

    def observe(payload):
        seen.append(_advisory_locks_held())
        if payload.get("crash"):
            raise RelayKilled  # the relay process dies mid-batch

    outbox.outbox_handler_register("test.observe", observe)
    try:
        outbox.outbox_enqueue("test.observe", {"crash": True})
        with pytest.raises(RelayKilled):
            outbox.outbox_relay()
        # The crashed batch rolled back: its row is still due, and no lock is left.
        assert _advisory_locks_held() == 0
        assert OutboxMessage.objects.get().dispatched_at is None

        OutboxMessage.objects.update(payload={"crash": False})
        assert outbox.outbox_relay() == 1
        assert seen == [1, 1]  # held while dispatching (a transaction-level lock) ...
        assert _advisory_locks_held() == 0  # ... and gone with the commit
    finally:
        outbox._handlers.pop("test.observe", None)

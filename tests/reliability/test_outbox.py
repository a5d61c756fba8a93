"""The transactional outbox (issue 9): follow-up work of a ledger write is committed with it,
survives a broker outage, and partner webhooks are numbered after the commit and delivered
exactly once when the broker is back."""

import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core import mail
from django.db import connection, transaction
from django.utils import timezone

from coalition import outbox
from coalition.models import OutboxMessage, Tier, TierChange
from partners import webhooks
from partners.models import WebhookDelivery, WebhookEvent
from partners.services import purchase_record
from tests import factories
from tests.api.conftest import Api, member_with_password
from tests.reliability.conftest import broker_down, celery_broker

RECORD = """mutation($input: RecordPurchaseInput!) { recordPurchase(input: $input) {
  transaction { id points } errors { code message } } }"""


def purchase(member, key, amount="10.00"):
    return {
        "memberNumber": member.member_number,
        "amount": amount,
        "currency": "USD",
        "reference": f"receipt-{key}",
        "idempotencyKey": key,
    }


@pytest.fixture
def shop(db, programme, counting_receiver):
    """A partner with a webhook endpoint at the counting receiver, and two shoppers."""
    partner, key = factories.onboarded_partner()
    endpoint, _ = webhooks.endpoint_register(
        partner=partner, url=counting_receiver.url, idempotency_key="hook"
    )
    return SimpleNamespace(
        partner=partner,
        key=key,
        endpoint=endpoint,
        shoppers=[member_with_password(), member_with_password()],
    )


@pytest.mark.django_db
def test_follow_up_work_rolls_back_with_the_write(shop):
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        outbox.celery_task_enqueue("coalition.tasks.notify_tier_change", 1)
        1 / 0  # noqa: B018 - the write fails after recording its follow-up

    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_many_tasks_are_recorded_at_once_in_order_with_one_nudge_and_roll_back_together(shop):
    calls = [(7, start, 1000) for start in (0, 1000, 2000)]
    task = "partners.tasks.import_purchases_chunk"

    # Recorded with the write, in the order given, and one relay asked for after the commit
    with transaction.atomic():
        outbox.celery_task_enqueue("coalition.tasks.notify_tier_change", 1)
        outbox.celery_tasks_enqueue(task, calls)
        nudges = [
            callback
            for _sids, callback, _robust in connection.run_on_commit
            if getattr(callback, "is_outbox_nudge", False)
        ]
        rows = list(OutboxMessage.objects.order_by("id").values_list("payload", flat=True))
        assert rows[1:] == [{"task": task, "args": list(args), "kwargs": {}} for args in calls]
        assert len(nudges) == 1
        transaction.set_rollback(True)

    # and gone with a write that fails
    assert not OutboxMessage.objects.exists()
    assert outbox.celery_tasks_enqueue(task, []) == []


@pytest.mark.django_db
def test_an_unknown_topic_fails_the_write(shop):
    with pytest.raises(LookupError):
        outbox.outbox_enqueue("no.such.topic", {})


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_broker_outage_loses_nothing_and_every_event_is_delivered_once(
    shop, client, counting_receiver
):
    # Given a tier both shoppers reach with these purchases (a notification follows).
    Tier.objects.create(code="BASE", name="Base", qualifying_points=0)
    Tier.objects.create(code="GOLD", name="Gold", qualifying_points=50)
    api = Api(client)
    mail.outbox.clear()

    # When the broker is down while purchases are recorded,
    with broker_down():
        for n in range(12):
            shopper = shop.shoppers[n % 2]
            payload = api.mutate(
                "recordPurchase", RECORD, purchase(shopper, f"p{n}"), token=shop.key
            )
            assert payload["errors"] == [] and payload["transaction"]["points"] == 10
        # and the periodic relay runs meanwhile,
        assert outbox.outbox_relay() == 0

    # then every write succeeded and every follow-up waits in the outbox, nothing sent.
    events = list(WebhookEvent.objects.order_by("id"))
    assert len(events) == 12
    assert all(event.sequence is None for event in events)
    pending = OutboxMessage.objects.filter(dispatched_at__isnull=True)
    assert pending.count() == 14  # 12 webhook events and 2 tier-change notifications
    assert "OperationalError" in OutboxMessage.objects.order_by("id").first().last_error
    assert counting_receiver.counts() == {}
    assert mail.outbox == []

    # When the broker is back (in-process here) and the relay runs, twice,
    with celery_broker(None, eager=True):
        assert outbox.outbox_relay() == 14
        assert outbox.outbox_relay() == 0
        # and a delivery task runs again for every event (an at-least-once redelivery),
        from partners.tasks import deliver_webhook_event

        for event in events:
            deliver_webhook_event.delay(event.pk)
        # and every tier notification too,
        from coalition.tasks import notify_tier_change

        for change in TierChange.objects.all():
            notify_tier_change.delay(change.pk)

    # then every event reached the receiver exactly once, numbered in order without gaps,
    counts = counting_receiver.counts()
    assert counts == {f"evt_{event.pk}": 1 for event in events}
    sequences = [body["sequence"] for body in counting_receiver.bodies]
    assert sorted(sequences) == list(range(1, 13))
    by_id = sorted(counting_receiver.bodies, key=lambda body: int(body["id"][4:]))
    assert [body["sequence"] for body in by_id] == list(range(1, 13))
    assert WebhookDelivery.objects.count() == 12
    # and each member heard of the new tier once.
    assert sorted(message.to[0] for message in mail.outbox) == sorted(
        shopper.email for shopper in shop.shoppers
    )
    assert {message.subject for message in mail.outbox} == {"Your tier is up Gold"}
    assert not TierChange.objects.filter(notified_at__isnull=True).exists()
    assert not OutboxMessage.objects.filter(dispatched_at__isnull=True).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_earning_does_not_wait_for_the_partner_webhook_counter(shop):
    """No hot row: a partner's webhook sequence row locked elsewhere (by the relay) does not
    hold up a purchase at that partner."""
    import psycopg2

    from partners.models import WebhookSequence

    db = connection.settings_dict
    other = psycopg2.connect(
        dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"] or None,
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432,
    )  # fmt: skip
    locked = threading.Event()
    release = threading.Event()

    def hold_the_counter():
        try:
            with other.cursor() as cursor:
                cursor.execute(
                    "SELECT last FROM partners_webhooksequence WHERE partner_id = %s FOR UPDATE",
                    [shop.partner.pk],
                )
                locked.set()
                release.wait(10)
            other.rollback()
        finally:
            other.close()

    assert WebhookSequence.objects.filter(partner=shop.partner).exists()
    holder = threading.Thread(target=hold_the_counter)
    holder.start()
    try:
        assert locked.wait(5)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '500ms'")
        with broker_down():
            result = purchase_record(
                partner=shop.partner,
                idempotency_key="hot-row",
                amount="5.00",
                currency="USD",
                reference="r",
                member_number=shop.shoppers[0].member_number,
            )
        assert result.points_awarded == 5
        assert WebhookEvent.objects.get().sequence is None
    finally:
        release.set()
        holder.join()
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")


@pytest.mark.django_db
def test_a_failing_handler_backs_off_and_does_not_block_the_others(settings, shop):
    calls = []

    def flaky(payload):
        calls.append(payload["n"])
        if payload["n"] == 1:
            raise ValueError("boom")

    outbox.outbox_handler_register("test.flaky", flaky)
    try:
        for n in range(3):
            outbox.outbox_enqueue("test.flaky", {"n": n})
        assert outbox.outbox_relay() == 2
        failed = OutboxMessage.objects.get(dispatched_at__isnull=True)
        assert failed.attempts == 1 and "ValueError: boom" in failed.last_error
        assert failed.next_attempt_at > timezone.now()
        assert outbox.outbox_relay() == 0  # backing off
        assert outbox.outbox_relay(now=timezone.now() + timedelta(minutes=1)) == 0
        assert calls == [0, 1, 2, 1]
    finally:
        outbox._handlers.pop("test.flaky", None)


@pytest.mark.django_db
def test_dispatched_rows_are_purged_after_a_week(shop):
    old = OutboxMessage.objects.create(topic="celery.task", payload={})
    OutboxMessage.objects.filter(pk=old.pk).update(dispatched_at=timezone.now() - timedelta(days=8))
    OutboxMessage.objects.create(topic="celery.task", payload={})  # pending: kept

    assert outbox.outbox_purge() == 1
    assert OutboxMessage.objects.count() == 1


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_after_an_outage_a_real_worker_delivers_every_event_once(
    shop, client, counting_receiver, tmp_path
):
    """The same outage with production's moving parts: the broker comes back as Redis, a
    Celery worker (subprocess) takes the delivery tasks the relay sends."""
    import os
    import time

    from tests.reliability.conftest import CeleryWorker, database_url_of_tests, project_env

    api = Api(client)
    with broker_down():
        for n in range(10):
            payload = api.mutate(
                "recordPurchase", RECORD, purchase(shop.shoppers[n % 2], f"w{n}"), token=shop.key
            )
            assert payload["errors"] == []
    assert counting_receiver.counts() == {}

    worker = CeleryWorker(
        env=project_env(DATABASE_URL=database_url_of_tests()), log=tmp_path / "worker.log"
    )
    try:
        worker.wait_ready()
        with celery_broker(os.environ["CELERY_BROKER_URL"], eager=False, queue=worker.queue):
            assert outbox.outbox_relay() == 10
            # The broker "hiccups" and the relay runs again: nothing is sent twice.
            assert outbox.outbox_relay() == 0
        deadline = time.monotonic() + 30
        while sum(counting_receiver.counts().values()) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # anything extra would arrive now
    finally:
        worker.stop()

    events = WebhookEvent.objects.order_by("id")
    assert counting_receiver.counts() == {f"evt_{event.pk}": 1 for event in events}
    assert [event.sequence for event in events] == list(range(1, 11))

"""Webhook retries are leased, not cleared, while a sweep posts them: a sweep killed mid-post
leaves the retry due again when the lease ends, sweeps running at once never post the same
retry twice, and a sweep stops at its time budget (the rest waits for the next one)."""

import threading
import time
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone

from partners import webhooks
from partners.models import WebhookDelivery, WebhookEndpoint, WebhookEvent


@pytest.fixture
def endpoint(partner):
    return WebhookEndpoint.objects.create(
        partner=partner, url="https://hooks.example.com/in", secret="whsec_test"
    )


def failed_delivery(endpoint, sequence: int, *, due) -> WebhookDelivery:
    """An event whose first attempt failed, with its retry due at `due`."""
    event = WebhookEvent.objects.create(
        partner=endpoint.partner, sequence=sequence, type="points.earned", payload={}
    )
    return WebhookDelivery.objects.create(
        event=event,
        endpoint=endpoint,
        attempt=1,
        status_code=500,
        error="HTTP 500",
        attempted_at=due - timedelta(minutes=1),
        next_attempt_at=due,
    )


class Receiver:
    """Stands in for `webhooks._post`: records what was posted (from any thread)."""

    def __init__(self, *, status=200, pause: float = 0.0, then=None):
        self.status, self.pause, self.then = status, pause, then
        self.posted: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, url, body, headers):
        with self._lock:
            self.posted.append(int(headers["Coalition-Event-Id"].removeprefix("evt_")))
        if self.pause:
            time.sleep(self.pause)
        if self.then:
            self.then()
        return self.status, ""


@pytest.mark.django_db
def test_a_sweep_killed_while_posting_leaves_the_retry_due_after_the_lease(endpoint, monkeypatch):
    # Given a failed delivery whose retry is due now
    now = timezone.now()
    first = failed_delivery(endpoint, 1, due=now)

    # When the sweep is stopped by its time limit in the middle of the post
    def killed(url, body, headers):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(webhooks, "_post", killed)
    with pytest.raises(SoftTimeLimitExceeded):
        webhooks.deliveries_retry_due(now=now, clock=lambda: 0.0)

    # Then no attempt was recorded, and the retry is still pending: due when the lease ends
    first.refresh_from_db()
    assert WebhookDelivery.objects.count() == 1
    assert first.next_attempt_at == now + webhooks.RETRY_LEASE

    # And no sweep takes it while the lease runs, the first one after it does
    receiver = Receiver()
    monkeypatch.setattr(webhooks, "_post", receiver)
    lease_end = first.next_attempt_at
    assert webhooks.deliveries_retry_due(now=lease_end - timedelta(seconds=1)) == 0
    assert webhooks.deliveries_retry_due(now=lease_end) == 1
    assert receiver.posted == [first.event_id]
    second = WebhookDelivery.objects.get(attempt=2)
    first.refresh_from_db()
    assert second.delivered_at and second.next_attempt_at is None
    assert first.next_attempt_at is None  # the lease went with the outcome's record


@pytest.mark.django_db
def test_a_failed_retry_sets_the_real_next_attempt(endpoint, monkeypatch):
    # Given a due retry and an endpoint that still answers 503
    now = timezone.now()
    first = failed_delivery(endpoint, 1, due=now)
    monkeypatch.setattr(webhooks, "_post", Receiver(status=503))

    # When the sweep retries it
    assert webhooks.deliveries_retry_due(now=now) == 1

    # Then the lease is gone and the next attempt is the backoff's, on the new attempt
    first.refresh_from_db()
    second = WebhookDelivery.objects.get(attempt=2)
    assert first.next_attempt_at is None
    assert second.next_attempt_at - second.attempted_at == webhooks.retry_delay(2)


@pytest.mark.django_db
def test_a_sweep_stops_at_its_time_budget(endpoint, monkeypatch):
    # Given five due retries, and posts that take ten seconds each
    now = timezone.now()
    deliveries = [
        failed_delivery(endpoint, n, due=now - timedelta(minutes=10 - n)) for n in range(1, 6)
    ]
    elapsed = [0.0]

    def ten_seconds_pass():
        elapsed[0] += 10

    receiver = Receiver(then=ten_seconds_pass)
    monkeypatch.setattr(webhooks, "_post", receiver)

    # When a sweep runs with a 25-second budget
    retried = webhooks.deliveries_retry_due(
        now=now, budget=timedelta(seconds=25), clock=lambda: elapsed[0]
    )

    # Then it takes no new retry once the budget is spent: three, the earliest due first
    assert retried == 3
    assert receiver.posted == [d.event_id for d in deliveries[:3]]
    # And the others are still due as they were (not leased), for the next sweep
    for delivery in deliveries[3:]:
        delivery.refresh_from_db()
        assert delivery.next_attempt_at <= now
    assert webhooks.deliveries_retry_due(now=now, clock=lambda: 0.0) == 2
    assert sorted(receiver.posted) == sorted(d.event_id for d in deliveries)


@pytest.mark.django_db
def test_a_retry_to_a_disabled_endpoint_is_dropped(endpoint, monkeypatch):
    now = timezone.now()
    first = failed_delivery(endpoint, 1, due=now)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(disabled_at=now)
    receiver = Receiver()
    monkeypatch.setattr(webhooks, "_post", receiver)

    assert webhooks.deliveries_retry_due(now=now) == 0

    first.refresh_from_db()
    assert first.next_attempt_at is None and receiver.posted == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_never_post_the_same_retry_twice(endpoint, monkeypatch):
    # Given 30 due retries, and posts slow enough for the sweeps to overlap
    now = timezone.now()
    deliveries = [failed_delivery(endpoint, n, due=now) for n in range(1, 31)]
    receiver = Receiver(pause=0.02)
    monkeypatch.setattr(webhooks, "_post", receiver)

    # When four sweeps run at the same moment (beat starts one a minute; they overlap)
    from tests import factories

    outcomes = factories.run_concurrently(4, lambda i: webhooks.deliveries_retry_due(now=now))

    # Then every retry was posted exactly once, and each has exactly one second attempt
    assert [status for status, _ in outcomes] == ["ok"] * 4
    assert sum(result for _, result in outcomes) == 30
    assert sorted(receiver.posted) == sorted(d.event_id for d in deliveries)
    assert WebhookDelivery.objects.filter(attempt=2).count() == 30
    assert not WebhookDelivery.objects.filter(next_attempt_at__isnull=False).exists()
    # And the sweeps shared the work (SKIP LOCKED: none queued behind another's claim)
    assert sum(1 for _, result in outcomes if result) > 1

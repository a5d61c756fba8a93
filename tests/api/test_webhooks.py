"""Outbound webhooks: events recorded with the ledger write, numbered per partner, signed,
delivered after the commit, retried with backoff, redelivered by staff."""

from datetime import timedelta

import pytest
from django.utils import timezone

from partners import webhooks
from partners.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from tests import factories
from tests.api.conftest import gid

RECORD = """mutation($input: RecordPurchaseInput!) { recordPurchase(input: $input) {
  transaction { id } errors { code } } }"""
REDEEM = """mutation($input: RedeemPointsInput!) { redeemPoints(input: $input) {
  transaction { id } errors { code } } }"""
REVERSE = """mutation($input: ReverseTransactionInput!) { reverseTransaction(input: $input) {
  transaction { id } errors { code } } }"""
CAPTURE = """mutation($input: CaptureRedemptionInput!) { captureRedemption(input: $input) {
  transaction { id } errors { code } } }"""


@pytest.fixture
def endpoint(brand, receiver):
    endpoint, _ = webhooks.endpoint_register(
        partner=brand.partner, url=receiver.url, idempotency_key="hook"
    )
    return endpoint


@pytest.fixture
def write(api, brand, django_capture_on_commit_callbacks):
    """Run a mutation as the brand and run what it scheduled after its commit."""

    def run(field, query, values):
        with django_capture_on_commit_callbacks(execute=True):
            return api.mutate(field, query, values, token=brand.key)

    return run


def purchase(shopper, key="p1", amount="10.00"):
    return {
        "memberNumber": shopper.member_number,
        "amount": amount,
        "currency": "USD",
        "reference": f"receipt-{key}",
        "idempotencyKey": key,
    }


@pytest.mark.django_db
def test_a_purchase_is_delivered_signed(write, shopper, endpoint, receiver):
    payload = write("recordPurchase", RECORD, purchase(shopper))

    (request,) = receiver.requests
    event = WebhookEvent.objects.get()
    headers, body = request["headers"], request["body"]
    assert webhooks.signature_verify(endpoint.secret, body, headers["Coalition-Signature"])
    assert not webhooks.signature_verify("whsec_wrong", body, headers["Coalition-Signature"])
    assert headers["Coalition-Event-Id"] == f"evt_{event.pk}"
    assert headers["Coalition-Sequence"] == "1"
    sent = receiver.events()[0]
    assert sent["type"] == "points.earned"
    assert sent["sequence"] == 1
    assert sent["data"]["transactionId"] == payload["transaction"]["id"]
    assert sent["data"]["memberNumber"] == shopper.member_number
    assert sent["data"]["points"] == 10
    assert sent["data"]["purchaseAmount"] == {"amount": "10.00", "currency": "USD"}
    delivery = WebhookDelivery.objects.get()
    assert (delivery.attempt, delivery.status_code) == (1, 200)
    assert delivery.delivered_at and delivery.next_attempt_at is None


@pytest.mark.django_db
def test_every_partner_write_is_an_event_in_sequence(write, brand, shopper, endpoint, receiver):
    earned = write("recordPurchase", RECORD, purchase(shopper))
    write(
        "redeemPoints",
        REDEEM,
        {
            "memberNumber": shopper.member_number,
            "points": 5,
            "reference": "t",
            "idempotencyKey": "r",
        },
    )
    hold = factories.hold(shopper, brand.partner, 20)
    write(
        "captureRedemption",
        CAPTURE,
        {"holdId": gid("RedemptionHold", hold.pk), "idempotencyKey": "c"},
    )
    write(
        "reverseTransaction",
        REVERSE,
        {"transactionId": earned["transaction"]["id"], "idempotencyKey": "v"},
    )

    sent = receiver.events()
    assert [(e["sequence"], e["type"]) for e in sent] == [
        (1, "points.earned"),
        (2, "points.redeemed"),
        (3, "points.redeemed"),
        (4, "transaction.reversed"),
    ]
    assert sent[2]["data"]["holdId"] == gid("RedemptionHold", hold.pk)
    assert sent[3]["data"]["reversalOf"] == earned["transaction"]["id"]


@pytest.mark.django_db
def test_replays_and_refusals_are_no_events(write, shopper, endpoint, receiver):
    write("recordPurchase", RECORD, purchase(shopper))
    write("recordPurchase", RECORD, purchase(shopper))  # replay
    write("recordPurchase", RECORD, purchase(shopper, key="p2", amount="-1"))  # refused
    write(
        "redeemPoints",
        REDEEM,
        {
            "memberNumber": shopper.member_number,
            "points": 10**6,
            "reference": "t",
            "idempotencyKey": "r",
        },
    )  # insufficient

    assert WebhookEvent.objects.count() == 1
    assert len(receiver.requests) == 1


@pytest.mark.django_db
def test_a_partner_without_an_endpoint_gets_no_events(write, other_brand, shopper, endpoint):
    factories.purchase(other_brand.partner, shopper, "10.00")

    assert not WebhookEvent.objects.filter(partner=other_brand.partner).exists()


@pytest.mark.django_db
def test_failures_are_retried_with_backoff_then_given_up(write, shopper, endpoint, receiver):
    receiver.status = 500
    write("recordPurchase", RECORD, purchase(shopper))
    first = WebhookDelivery.objects.get()
    assert (first.status_code, first.delivered_at) == (500, None)
    assert (
        timedelta(seconds=50) < first.next_attempt_at - first.attempted_at <= timedelta(minutes=1)
    )

    assert webhooks.deliveries_retry_due(now=first.next_attempt_at - timedelta(seconds=1)) == 0
    assert webhooks.deliveries_retry_due(now=first.next_attempt_at) == 1
    second = WebhookDelivery.objects.get(attempt=2)
    first.refresh_from_db()
    assert first.next_attempt_at is None
    assert second.next_attempt_at - second.attempted_at == timedelta(minutes=2)

    receiver.status = 204
    assert webhooks.deliveries_retry_due(now=second.next_attempt_at) == 1
    third = WebhookDelivery.objects.get(attempt=3)
    assert third.delivered_at and third.next_attempt_at is None
    assert webhooks.deliveries_retry_due(now=timezone.now() + timedelta(days=1)) == 0
    assert len(receiver.requests) == 3


@pytest.mark.django_db
def test_retries_stop_after_three_days(brand, shopper, endpoint, receiver):
    receiver.status = 503
    event = WebhookEvent.objects.create(
        partner=brand.partner,
        sequence=99,
        type="points.earned",
        payload={},
        created_at=timezone.now() - timedelta(hours=71, minutes=59),
    )

    delivery = webhooks.delivery_attempt(event=event, endpoint=endpoint)

    assert delivery.next_attempt_at is None
    assert webhooks.retry_delay(1) == timedelta(minutes=1)
    assert webhooks.retry_delay(30) == timedelta(hours=6)


@pytest.mark.django_db
def test_an_unreachable_endpoint_is_recorded(write, shopper, endpoint):
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url="http://127.0.0.1:9/closed")

    write("recordPurchase", RECORD, purchase(shopper))

    delivery = WebhookDelivery.objects.get()
    assert delivery.status_code is None and delivery.error and delivery.next_attempt_at


@pytest.mark.django_db
def test_the_address_checked_is_the_address_posted_to(
    write, shopper, endpoint, receiver, settings, monkeypatch
):
    """DNS rebinding: a name that answers a public address when checked and a private one
    when connected to. The host is resolved once, and the POST goes to the address checked."""
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ALLOW_PRIVATE_HOSTS": False}
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url="http://hooks.example.com/in")
    answers = iter(["93.184.216.34", "127.0.0.1"])  # public first, then the receiver's
    resolved, connected = [], []

    def getaddrinfo(host, *args, **kwargs):
        resolved.append(host)
        address = next(answers)
        return [(2, 1, 6, "", (address, 0))]

    def create_connection(address, *args, **kwargs):
        connected.append(address)
        raise ConnectionRefusedError("not on this network")

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(webhooks.socket, "create_connection", create_connection)

    write("recordPurchase", RECORD, purchase(shopper))

    assert resolved == ["hooks.example.com"]
    assert connected == [("93.184.216.34", 80)]
    assert receiver.requests == []  # nothing reached the private address
    delivery = WebhookDelivery.objects.get()
    assert delivery.status_code is None and "not on this network" in delivery.error


@pytest.mark.django_db
def test_an_endpoint_resolving_to_a_private_address_gets_nothing(
    write, shopper, endpoint, receiver, settings
):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ALLOW_PRIVATE_HOSTS": False}

    write("recordPurchase", RECORD, purchase(shopper))  # the receiver is on 127.0.0.1

    assert receiver.requests == []
    delivery = WebhookDelivery.objects.get()
    assert delivery.status_code is None and "public address" in delivery.error


@pytest.mark.django_db
def test_staff_redeliver_from_the_admin(admin_client, write, shopper, endpoint, receiver):
    write("recordPurchase", RECORD, purchase(shopper))
    event = WebhookEvent.objects.get()

    response = admin_client.post(
        "/admin/partners/webhookevent/",
        {"action": "redeliver", "_selected_action": [event.pk]},
    )

    assert response.status_code == 302
    assert list(WebhookDelivery.objects.order_by("attempt").values_list("attempt", flat=True)) == [
        1,
        2,
    ]
    assert len(receiver.requests) == 2
    assert receiver.events()[0] == receiver.events()[1]


@pytest.mark.django_db
def test_a_disabled_endpoint_gets_nothing_more(write, shopper, endpoint, receiver):
    receiver.status = 500
    write("recordPurchase", RECORD, purchase(shopper))
    webhooks.endpoint_disable(endpoint=endpoint)

    assert webhooks.deliveries_retry_due(now=timezone.now() + timedelta(hours=1)) == 0
    write("recordPurchase", RECORD, purchase(shopper, key="p2"))
    assert WebhookEvent.objects.count() == 1


@pytest.mark.django_db
def test_expired_holds_and_tier_changes_are_swept_once(
    brand, shopper, endpoint, receiver, django_capture_on_commit_callbacks
):
    from coalition.models import RedemptionHold, Tier
    from coalition.services import holds_expire_due

    hold = factories.hold(shopper, brand.partner, 30)
    RedemptionHold.objects.filter(pk=hold.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    holds_expire_due()
    Tier.objects.create(code="BLUE", name="Blue", qualifying_points=0)
    Tier.objects.create(code="GOLD", name="Gold", qualifying_points=1005)
    factories.earn(shopper, factories.onboarded_partner()[0], 10)  # upgrade, elsewhere

    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks.domain_events_sweep() == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks.domain_events_sweep() == 0

    sent = {event["type"]: event for event in receiver.events()}
    assert sent["hold.expired"]["data"]["holdId"] == gid("RedemptionHold", hold.pk)
    assert sent["hold.expired"]["data"]["points"] == 30
    # The brand dealt with the member, so it hears of the new tier.
    assert sent["member.tier_changed"]["data"]["toTier"] == "GOLD"


@pytest.mark.django_db(transaction=True)
def test_event_record_refuses_to_run_outside_the_write(brand):
    with pytest.raises(RuntimeError):
        webhooks.event_record(partner=brand.partner, type="points.earned", payload={})

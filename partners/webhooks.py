"""Outbound webhooks: a partner's events, signed, numbered, delivered with retries.

Recording. `event_record` is called by the partners services inside the database transaction
of the ledger write it reports (purchase_record, points_redeem, redemption_capture,
partner_transaction_reverse), so an event exists if and only if the write committed. Events
that happen inside the programme itself (a hold expiring, a tier changing) are found after
the fact by `domain_events_sweep` (every minute), each recorded once (`dedup_key`). Only
partners with an active endpoint get events. Recording only inserts rows (the event and a
`partners.webhook_event` outbox row, coalition/outbox.py): no partner-wide row is locked in
the write path, so tills earning at one partner never queue on each other (issue 9).

Numbering. After the commit, the outbox relay — one at a time, in outbox id order — gives
each event the partner's next sequence number (`WebhookSequence`, locked by the relay only)
and sends the delivery task. Numbers have no gaps and follow the order the relay saw the
commits in. A broker outage delays events, never loses them: the outbox row waits.

Delivery. A Celery task POSTs the event to each active endpoint, once per endpoint even when
the task runs twice (the event row is locked while it is delivered):

    POST <url>
    Content-Type: application/json
    Coalition-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
    Coalition-Event-Id: evt_<id>        Coalition-Sequence: <n>

    {"id": "evt_<id>", "type": "points.earned", "sequence": n, "createdAt": "...", "data": {...}}

A 2xx answer delivers it. Anything else, or no answer within `WEBHOOKS["TIMEOUT"]` seconds,
is recorded (every attempt is a `WebhookDelivery` row) and retried with exponential backoff
(1 min, 2, 4, … capped at 6 h) for `WEBHOOKS["RETRY_FOR_HOURS"]` (3 days); the retries are
driven by the database (`deliveries_retry_due`, every minute), so none is lost with a worker:
a sweep leases each retry it takes (its `next_attempt_at` pushed `RETRY_LEASE` ahead) rather
than clearing it, so a sweep killed mid-post leaves the retry due again when the lease ends,
and each sweep stops after `RETRY_SWEEP_BUDGET`, well inside the task's time limit.
Staff can redeliver any event from the admin. Receivers should verify the signature, refuse
timestamps older than a few minutes, and use the sequence to order and de-duplicate.

Endpoint URLs must be https (http only when `WEBHOOKS["ALLOW_HTTP"]`) and, unless
`WEBHOOKS["ALLOW_PRIVATE_HOSTS"]`, must not resolve to private, loopback or link-local
addresses (checked at registration and before every delivery); redirects are not followed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from coalition import services as ledger
from coalition.errors import InvalidInput
from coalition.outbox import outbox_enqueue

from .models import (
    Partner,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookSequence,
)

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SIGNATURE_HEADER = "Coalition-Signature"
MAX_ENDPOINTS_PER_PARTNER = 10
FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=6)
# A retry taken by a sweep is due again this long after (the sweep died while posting it).
# Longer than one post can last (connect, send and read each within WEBHOOKS["TIMEOUT"]).
RETRY_LEASE = timedelta(minutes=5)
# A sweep takes no new retry after this long; the rest waits for the next sweep (every
# minute). With one post after it, well inside CELERY_TASK_SOFT_TIME_LIMIT (14 min).
RETRY_SWEEP_BUDGET = timedelta(minutes=5)
OUTBOX_TOPIC = "partners.webhook_event"


class EventType(StrEnum):
    POINTS_EARNED = "points.earned"
    POINTS_REDEEMED = "points.redeemed"
    TRANSACTION_REVERSED = "transaction.reversed"
    MEMBER_TIER_CHANGED = "member.tier_changed"
    HOLD_EXPIRED = "hold.expired"
    SETTLEMENT_STATEMENT_READY = "settlement.statement_ready"


def _setting(name: str) -> Any:
    defaults = {
        "TIMEOUT": 10,
        "RETRY_FOR_HOURS": 72,
        "ALLOW_HTTP": False,
        "ALLOW_PRIVATE_HOSTS": False,
    }
    return getattr(settings, "WEBHOOKS", {}).get(name, defaults[name])


def global_id(type_name: str, pk: int) -> str:
    """The id the GraphQL API shows for the object (relay: base64 of "Type:pk")."""
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode()


# --------------------------------------------------------------------------- endpoints


def endpoints_of(*, partner: Partner) -> QuerySet:
    """The partner's active endpoints."""
    return WebhookEndpoint.objects.filter(partner=partner, disabled_at__isnull=True)


def _addresses(host: str) -> list[str]:
    """The addresses the host resolves to (none if it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(info[4][0].split("%")[0] for info in infos))


def _all_public(addresses: list[str]) -> bool:
    """Do all the addresses lie outside private networks (and is there one)?"""
    return bool(addresses) and all(ipaddress.ip_address(a).is_global for a in addresses)


def _public_host(host: str) -> bool:
    """Does every address the host resolves to lie outside private networks?"""
    return _all_public(_addresses(host))


def url_validate(url: Any) -> str:
    """An endpoint URL we are willing to post to (raises InvalidInput on field "url")."""
    if not isinstance(url, str) or not url.strip() or len(url) > 500:
        raise InvalidInput("A URL of at most 500 characters is required", field="url")
    url = url.strip()
    parts = urllib.parse.urlsplit(url)
    allowed = ("https", "http") if _setting("ALLOW_HTTP") else ("https",)
    if parts.scheme not in allowed or not parts.hostname:
        raise InvalidInput(f"The URL must be {' or '.join(allowed)}://host/…", field="url")
    if parts.username or parts.password:
        raise InvalidInput("The URL must not carry credentials", field="url")
    if not _setting("ALLOW_PRIVATE_HOSTS") and not _public_host(parts.hostname):
        raise InvalidInput("The URL must resolve to a public address", field="url")
    return url


@ledger.ledger_write
def endpoint_register(
    *, partner: Partner, url: str, idempotency_key: str
) -> tuple[WebhookEndpoint, bool]:
    """Register an endpoint for the partner's events and give it a new signing secret.

    Returns the endpoint (its `secret` is to be shown to the partner once) and whether this
    was a replay of an earlier registration with the same idempotency key.
    """
    caller = f"partner:{partner.pk}"
    ledger.validate_idempotency_key(idempotency_key)
    url = url_validate(url)
    request_hash = ledger.request_fingerprint("webhook_endpoint_register", url=url)
    record = ledger.idempotency_replay(
        caller=caller,
        idempotency_key=idempotency_key,
        operation="webhook_endpoint_register",
        request_hash=request_hash,
    )
    if record is not None:
        return WebhookEndpoint.objects.get(pk=record.result_id), True
    from .services.accounts import require_active_partner

    require_active_partner(partner)
    if endpoints_of(partner=partner).count() >= MAX_ENDPOINTS_PER_PARTNER:
        raise InvalidInput(
            f"At most {MAX_ENDPOINTS_PER_PARTNER} active endpoints per partner", field="url"
        )
    endpoint = WebhookEndpoint.objects.create(
        partner=partner, url=url, secret=SECRET_PREFIX + secrets.token_urlsafe(32)
    )
    WebhookSequence.objects.get_or_create(partner=partner)
    ledger.idempotency_record(
        caller=caller,
        idempotency_key=idempotency_key,
        operation="webhook_endpoint_register",
        request_hash=request_hash,
        result_id=endpoint.pk,
    )
    return endpoint, False


def endpoint_disable(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """Stop sending to an endpoint (pending retries to it are dropped)."""
    if endpoint.disabled_at is None:
        endpoint.disabled_at = timezone.now()
        endpoint.save(update_fields=["disabled_at"])
        WebhookDelivery.objects.filter(endpoint=endpoint, next_attempt_at__isnull=False).update(
            next_attempt_at=None
        )
    return endpoint


# --------------------------------------------------------------------------- recording


def event_record(
    *,
    partner: Partner | None,
    type: str,
    payload: dict | Callable[[], dict],
    dedup_key: str | None = None,
) -> WebhookEvent | None:
    """Record an event for the partner in the caller's database transaction; the outbox
    relay numbers and delivers it once that commits. Nothing is recorded (and `payload`,
    when a callable, is not even built) for a partner without an active endpoint.

    Two inserts, no lock: it may run anywhere in the write.
    """
    if partner is None:
        return None
    if not connection.in_atomic_block:
        raise RuntimeError("event_record must run inside the transaction of the write")
    if not endpoints_of(partner=partner).exists():
        return None
    event = WebhookEvent.objects.create(
        partner=partner,
        sequence=None,
        type=str(type),
        payload=payload() if callable(payload) else payload,
        dedup_key=dedup_key,
    )
    outbox_enqueue(OUTBOX_TOPIC, {"event_id": event.pk})
    return event


def outbox_event_dispatch(payload: dict) -> None:
    """The outbox handler of `partners.webhook_event` rows (run by the relay, in outbox id
    order, after the write committed): give the event the partner's next sequence number
    and send its delivery task. Run again after a relay crash, it keeps the number."""
    from .tasks import deliver_webhook_event

    event = WebhookEvent.objects.filter(pk=payload["event_id"]).first()
    if event is None:
        return
    if event.sequence is None:
        counter = WebhookSequence.objects.select_for_update().filter(partner_id=event.partner_id)
        if not counter.exists():
            WebhookSequence.objects.get_or_create(partner_id=event.partner_id)
        counter = counter.get()
        counter.last += 1
        counter.save(update_fields=["last"])
        WebhookEvent.objects.filter(pk=event.pk).update(sequence=counter.last)
    deliver_webhook_event.apply_async((event.pk,), retry=False)


def transaction_payload(txn) -> dict:
    """What partners are told about a ledger transaction at their tills."""
    data = {
        "transactionId": global_id("PointsTransaction", txn.pk),
        "kind": txn.kind,
        "memberNumber": txn.member.member_number if txn.member_id else None,
        "points": txn.member_points,
        "reference": txn.reference or None,
        "createdAt": txn.created_at.isoformat(),
    }
    if txn.purchase_amount is not None:
        data["purchaseAmount"] = {
            "amount": str(txn.purchase_amount),
            "currency": txn.purchase_currency,
        }
    if "breakdown" in (txn.metadata or {}):
        data["breakdown"] = txn.metadata["breakdown"]
    if txn.reversal_of_id:
        data["reversalOf"] = global_id("PointsTransaction", txn.reversal_of_id)
    if txn.hold_id:
        data["holdId"] = global_id("RedemptionHold", txn.hold_id)
    return data


def domain_events_sweep(*, now: datetime | None = None, window_hours: int = 48) -> int:
    """Record the events the programme produced by itself: holds that expired (at the
    partner that took the hold) and tier changes (at every partner the member dealt with).
    Each is recorded once whatever the concurrency. Returns how many were recorded."""
    from coalition.models import LedgerTransaction, RedemptionHold, TierChange

    now = now or timezone.now()
    since = now - timedelta(hours=window_hours)
    first_endpoint = {}
    for partner_id, created_at in WebhookEndpoint.objects.filter(
        disabled_at__isnull=True
    ).values_list("partner_id", "created_at"):
        first_endpoint[partner_id] = min(created_at, first_endpoint.get(partner_id, created_at))
    if not first_endpoint:
        return 0
    partners = Partner.objects.in_bulk(list(first_endpoint))
    recorded = 0

    holds = RedemptionHold.objects.select_related("member").filter(
        status=RedemptionHold.Status.EXPIRED,
        resolved_at__gte=since,
        partner_id__in=list(first_endpoint),
    )
    for hold in holds.iterator(chunk_size=500):
        if hold.resolved_at < first_endpoint[hold.partner_id]:
            continue
        payload = {
            "holdId": global_id("RedemptionHold", hold.pk),
            "memberNumber": hold.member.member_number,
            "points": hold.points,
            "reference": hold.reference or None,
            "expiredAt": hold.resolved_at.isoformat(),
        }
        recorded += _record_once(
            partners[hold.partner_id], EventType.HOLD_EXPIRED, payload, f"hold.expired:{hold.pk}"
        )

    changes = TierChange.objects.select_related("member", "from_tier", "to_tier").filter(
        created_at__gte=since
    )
    for change in changes.iterator(chunk_size=500):
        dealt_with = set(
            LedgerTransaction.objects.filter(
                member_id=change.member_id, partner_id__in=list(first_endpoint)
            )
            .values_list("partner_id", flat=True)
            .distinct()
        )
        payload = {
            "memberNumber": change.member.member_number,
            "fromTier": change.from_tier.code if change.from_tier else None,
            "toTier": change.to_tier.code,
            "qualifyingPoints": change.qualifying_points,
            "changedAt": change.created_at.isoformat(),
        }
        for partner_id in sorted(dealt_with):
            if change.created_at < first_endpoint[partner_id]:
                continue
            recorded += _record_once(
                partners[partner_id],
                EventType.MEMBER_TIER_CHANGED,
                payload,
                f"member.tier_changed:{change.pk}",
            )
    return recorded


def _record_once(partner: Partner, type: str, payload: dict, dedup_key: str) -> int:
    if WebhookEvent.objects.filter(partner=partner, dedup_key=dedup_key).exists():
        return 0
    try:
        with transaction.atomic():
            return (
                1
                if event_record(partner=partner, type=type, payload=payload, dedup_key=dedup_key)
                else 0
            )
    except IntegrityError:
        return 0  # recorded concurrently by another sweep


# --------------------------------------------------------------------------- delivery


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, as in the Coalition-Signature header."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def signature_verify(
    secret: str, body: bytes, header: str, *, tolerance: int = 300, now: float | None = None
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature_header(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def event_body(event: WebhookEvent) -> bytes:
    return json.dumps(
        {
            "id": f"evt_{event.pk}",
            "type": event.type,
            "sequence": event.sequence,
            "createdAt": event.created_at.isoformat(),
            "data": event.payload,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to an address resolved and checked beforehand (the Host header is the name)."""

    def __init__(self, host: str, port: int | None, *, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address resolved and checked beforehand; the certificate is still
    verified against the host's name (SNI and hostname check)."""

    def __init__(self, host: str, port: int | None, *, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _post(url: str, body: bytes, headers: dict) -> tuple[int | None, str]:
    """POST and return (status code, error text); never raises for network trouble.

    The host is resolved once: the address checked (public, unless private hosts are
    allowed) is the address connected to, so a name that changes its answer between the
    check and the connection (DNS rebinding) cannot steer the POST into a private network.
    Redirects are not followed."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    addresses = _addresses(host)
    if not addresses:
        return None, f"the endpoint's host {host!r} does not resolve"
    if not _setting("ALLOW_PRIVATE_HOSTS") and not _all_public(addresses):
        return None, "the endpoint no longer resolves to a public address"
    pinned = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = None
    try:
        conn = pinned(host, parts.port, address=addresses[0], timeout=_setting("TIMEOUT"))
        conn.request("POST", path, body=body, headers=headers)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:400]}"
    finally:
        if conn is not None:
            conn.close()
    return status, "" if 200 <= status < 300 else f"HTTP {status}"


def retry_delay(attempt: int) -> timedelta:
    """Exponential backoff after the given failed attempt: 1 min, 2, 4, … at most 6 h."""
    return min(FIRST_RETRY * 2 ** max(attempt - 1, 0), LONGEST_RETRY)


def delivery_attempt(
    *, event: WebhookEvent, endpoint: WebhookEndpoint, retry_of: WebhookDelivery | None = None
) -> WebhookDelivery:
    """Post the event to the endpoint once, and record the attempt (and the next one due,
    while the retry period lasts). `retry_of`: the failed attempt a sweep leased to make
    this one; its lease is released with the record of this attempt's outcome."""
    attempt = (
        WebhookDelivery.objects.filter(event=event, endpoint=endpoint)
        .order_by("-attempt")
        .values_list("attempt", flat=True)
        .first()
        or 0
    ) + 1
    body = event_body(event)
    timestamp = int(time.time())
    status, error = _post(
        endpoint.url,
        body,
        {
            "Content-Type": "application/json",
            "User-Agent": "Coalition-Webhooks/1",
            SIGNATURE_HEADER: signature_header(endpoint.secret, body, timestamp),
            "Coalition-Event-Id": f"evt_{event.pk}",
            "Coalition-Sequence": str(event.sequence),
        },
    )
    now = timezone.now()
    delivered = status is not None and 200 <= status < 300
    if not delivered and not error:
        error = f"HTTP {status}"
    next_attempt_at = None
    if not delivered:
        due = now + retry_delay(attempt)
        if due <= event.created_at + timedelta(hours=_setting("RETRY_FOR_HOURS")):
            next_attempt_at = due
        logger.info("webhook evt_%s to endpoint %s failed: %s", event.pk, endpoint.pk, error)
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                event=event,
                endpoint=endpoint,
                attempt=attempt,
                status_code=status,
                error=error,
                attempted_at=now,
                delivered_at=now if delivered else None,
                next_attempt_at=next_attempt_at,
            )
            if retry_of is not None:
                _lease_release(retry_of)
            return delivery
    except IntegrityError:
        # Two workers attempted the same delivery at once; the other one's row stands.
        if retry_of is not None:
            _lease_release(retry_of)
        return WebhookDelivery.objects.get(event=event, endpoint=endpoint, attempt=attempt)


def event_deliver(*, event_id: int) -> list[WebhookDelivery]:
    """First attempt of an event at each of the partner's active endpoints — once per
    endpoint, however many times the task runs (at-least-once outbox dispatch)."""
    event = WebhookEvent.objects.filter(pk=event_id).first()
    if event is None:
        return []
    if event.sequence is None:
        # The relay that sent this task has not committed yet: wait for it on the partner's
        # counter (taken before the event row, in the relay's order: no deadlock).
        with transaction.atomic():
            list(WebhookSequence.objects.select_for_update().filter(partner_id=event.partner_id))
        event.refresh_from_db(fields=["sequence"])
        if event.sequence is None:
            return []  # the relay rolled back; it sends the event again
    deliveries = []
    with transaction.atomic():
        # Locked while it is delivered: a second run of the task waits, then finds the
        # attempts made and posts nothing.
        event = WebhookEvent.objects.select_for_update().get(pk=event_id)
        for endpoint in endpoints_of(partner=event.partner).order_by("pk"):
            if WebhookDelivery.objects.filter(event=event, endpoint=endpoint).exists():
                continue  # already attempted (the task ran twice)
            deliveries.append(delivery_attempt(event=event, endpoint=endpoint))
    return deliveries


def _retry_claim(*, now: datetime, lease_until: datetime) -> WebhookDelivery | None:
    """Lease the earliest due retry for this sweep: its `next_attempt_at` moves `RETRY_LEASE`
    ahead, so no other sweep takes it meanwhile and it is due again if this one dies.

    `SKIP LOCKED` lets concurrent sweeps pass over a row another is claiming; the update is
    conditional as well (still due), so two sweeps never both lease the same retry."""
    with transaction.atomic():
        delivery_id = (
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(next_attempt_at__lte=now)
            .order_by("next_attempt_at", "pk")
            .values_list("pk", flat=True)
            .first()
        )
        if delivery_id is None:
            return None
        leased = WebhookDelivery.objects.filter(pk=delivery_id, next_attempt_at__lte=now).update(
            next_attempt_at=lease_until
        )
    if not leased:
        return None  # only where SKIP LOCKED is not supported: another sweep took it
    return WebhookDelivery.objects.select_related("event", "endpoint").get(pk=delivery_id)


def _lease_release(delivery: WebhookDelivery) -> None:
    """The leased retry was made (or is not to be): it is no longer due. Only our own lease
    is released: one that ran out and was taken by another sweep is that sweep's."""
    WebhookDelivery.objects.filter(pk=delivery.pk, next_attempt_at=delivery.next_attempt_at).update(
        next_attempt_at=None
    )


def deliveries_retry_due(
    *,
    now: datetime | None = None,
    limit: int = 500,
    budget: timedelta = RETRY_SWEEP_BUDGET,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Retry failed deliveries whose next attempt is due, earliest first, until none is left,
    `limit` were retried or `budget` has passed (the rest waits for the next sweep). Each is
    leased before it is posted (`_retry_claim`), so sweeps running at once never post the
    same attempt twice, and one killed mid-post leaves it due again after `RETRY_LEASE`.
    Returns how many were retried."""
    now = now or timezone.now()
    started = clock()
    retried = 0
    while retried < limit and clock() - started < budget.total_seconds():
        # The lease runs from the moment of the claim, not the sweep's start.
        elapsed = timedelta(seconds=clock() - started)
        delivery = _retry_claim(now=now, lease_until=now + elapsed + RETRY_LEASE)
        if delivery is None:
            break
        if delivery.endpoint.disabled_at is not None:
            _lease_release(delivery)
            continue
        delivery_attempt(event=delivery.event, endpoint=delivery.endpoint, retry_of=delivery)
        retried += 1
    return retried


def event_redeliver(*, event: WebhookEvent) -> list[WebhookDelivery]:
    """Staff asked for it (admin): one more attempt now at every active endpoint, whatever
    happened before. Pending automatic retries are replaced by this attempt's outcome."""
    if event.sequence is None:
        return []  # not dispatched by the outbox relay yet: its first delivery is pending
    WebhookDelivery.objects.filter(event=event, next_attempt_at__isnull=False).update(
        next_attempt_at=None
    )
    return [
        delivery_attempt(event=event, endpoint=endpoint)
        for endpoint in endpoints_of(partner=event.partner).order_by("pk")
    ]

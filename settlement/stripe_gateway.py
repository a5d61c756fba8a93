"""The one module that talks to Stripe. Nothing else imports `stripe`.

Every call uses a `StripeClient` pinned to `settings.STRIPE_API_VERSION`, against
`settings.STRIPE_API_BASE` (the local emulator in development and tests). Results come back
as plain dataclasses, failures as `PermanentError` (the request can never succeed as it is:
a declined card, a missing account) or `TransientError` (try again later: network, 429, 5xx).
The library itself retries transient failures `STRIPE_MAX_NETWORK_RETRIES` times with
backoff, reusing the idempotency key, before one reaches us.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import stripe
from django.conf import settings

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_API_VERSION = "2024-06-20"


class GatewayError(Exception):
    """A Stripe request failed."""

    transient = False

    def __init__(self, message: str, *, code: str = "", stripe_id: str = "", status: Any = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.stripe_id = stripe_id  # the object the failure is about, when Stripe names one
        self.status = status


class PermanentError(GatewayError):
    """Stripe refused the request for good (card declined, no such account, bad request)."""


class TransientError(GatewayError):
    """Stripe could not be reached or asked us to come back later."""

    transient = True


class SignatureError(Exception):
    """A webhook whose signature is missing, wrong or too old."""


# --------------------------------------------------------------------------- the client


def api_version() -> str:
    return getattr(settings, "STRIPE_API_VERSION", DEFAULT_API_VERSION)


@functools.lru_cache(maxsize=8)
def _client_for(api_key: str, api_base: str, version: str, retries: int, timeout: int):
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        stripe_version=version,
        max_network_retries=retries,
        http_client=stripe.RequestsClient(timeout=timeout),
    )


def client() -> stripe.StripeClient:
    """The Stripe client for the current settings (cached per configuration)."""
    return _client_for(
        settings.STRIPE_API_KEY,
        settings.STRIPE_API_BASE,
        api_version(),
        getattr(settings, "STRIPE_MAX_NETWORK_RETRIES", 2),
        getattr(settings, "STRIPE_TIMEOUT_SECONDS", 30),
    )


def _translate(exc: stripe.StripeError) -> GatewayError:
    """Stripe's exception as permanent or transient, with its reason."""
    status = getattr(exc, "http_status", None)
    error = getattr(exc, "error", None)
    code = (
        getattr(error, "decline_code", None)
        or getattr(exc, "code", None)
        or getattr(error, "code", None)
        or ""
    )
    message = getattr(exc, "user_message", None) or str(exc) or exc.__class__.__name__
    stripe_id = ""
    intent = getattr(error, "payment_intent", None)
    if intent is not None:
        stripe_id = getattr(intent, "id", "") or ""
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return TransientError(message, code=code or "network", status=status)
    if isinstance(exc, stripe.AuthenticationError):
        # Our configuration, not the line: keep it pending and try again once fixed.
        return TransientError(message, code=code or "authentication", status=status)
    if isinstance(exc, stripe.APIError) and (status is None or status >= 500 or status == 409):
        return TransientError(message, code=code or "api_error", status=status)
    if isinstance(exc, stripe.CardError):
        return PermanentError(
            message, code=code or "card_declined", stripe_id=stripe_id, status=status
        )
    if status is not None and status >= 500:
        return TransientError(message, code=code or "api_error", status=status)
    return PermanentError(
        message, code=code or "invalid_request", stripe_id=stripe_id, status=status
    )


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except stripe.StripeError as exc:
        raise _translate(exc) from exc


def _options(idempotency_key: str | None = None, account: str | None = None) -> dict:
    options: dict[str, Any] = {}
    if idempotency_key:
        options["idempotency_key"] = idempotency_key
    if account:
        options["stripe_account"] = account
    return options


def _metadata(obj: Any) -> dict[str, str]:
    metadata = getattr(obj, "metadata", None)
    return dict(metadata.to_dict()) if metadata is not None else {}


def _id_of(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else getattr(value, "id", "") or ""


def _auto_paging(page: Any) -> Iterator[Any]:
    return iter(page.auto_paging_iter())


# --------------------------------------------------------------------------- transfers


@dataclass(frozen=True)
class TransferInfo:
    id: str
    amount: int
    amount_reversed: int
    currency: str
    destination: str
    transfer_group: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def reversed(self) -> bool:
        return self.amount_reversed >= self.amount > 0

    @property
    def net_amount(self) -> int:
        return self.amount - self.amount_reversed


def _transfer(obj: Any) -> TransferInfo:
    return TransferInfo(
        id=obj.id,
        amount=int(obj.amount),
        amount_reversed=int(getattr(obj, "amount_reversed", 0) or 0),
        currency=str(obj.currency).upper(),
        destination=_id_of(getattr(obj, "destination", None)),
        transfer_group=getattr(obj, "transfer_group", None) or "",
        metadata=_metadata(obj),
    )


def transfer_create(
    *,
    amount: int,
    currency: str,
    destination: str,
    transfer_group: str,
    metadata: dict[str, str],
    description: str,
    idempotency_key: str,
) -> TransferInfo:
    """Send `amount` minor units from the platform to a connected account."""
    params = {
        "amount": amount,
        "currency": currency.lower(),
        "destination": destination,
        "transfer_group": transfer_group,
        "metadata": metadata,
        "description": description,
    }
    return _transfer(_call(lambda: client().v1.transfers.create(params, _options(idempotency_key))))


def transfer_retrieve(transfer_id: str) -> TransferInfo:
    return _transfer(_call(lambda: client().v1.transfers.retrieve(transfer_id)))


def transfers_in_group(transfer_group: str) -> list[TransferInfo]:
    """Every transfer Stripe holds in a transfer group."""
    page = _call(
        lambda: client().v1.transfers.list({"transfer_group": transfer_group, "limit": 100})
    )
    return _call(lambda: [_transfer(obj) for obj in _auto_paging(page)])


# --------------------------------------------------------------------------- payments


# The statuses from which Stripe lets a PaymentIntent be cancelled.
CANCELLABLE_PAYMENT_STATUSES = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"}
)


@dataclass(frozen=True)
class PaymentInfo:
    id: str
    status: str
    amount: int
    amount_received: int
    currency: str
    customer: str
    transfer_group: str
    metadata: dict[str, str] = field(default_factory=dict)
    failure_code: str = ""
    failure_message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def failed(self) -> bool:
        """Failed for this attempt. Not final unless canceled: an intent needing action
        succeeds once the partner completes 3-D Secure, one needing a payment method once
        someone confirms it with one (`cancellable` says which can still move)."""
        return self.status in ("requires_payment_method", "canceled", "requires_action")

    @property
    def processing(self) -> bool:
        """Stripe is moving the money (a debit): it may still succeed or fail."""
        return self.status == "processing"

    @property
    def cancellable(self) -> bool:
        """Not final, and Stripe still lets it be cancelled (so that it never succeeds)."""
        return self.status in CANCELLABLE_PAYMENT_STATUSES


def _payment(obj: Any) -> PaymentInfo:
    last_error = getattr(obj, "last_payment_error", None)
    return PaymentInfo(
        id=obj.id,
        status=str(obj.status),
        amount=int(obj.amount),
        amount_received=int(getattr(obj, "amount_received", 0) or 0),
        currency=str(obj.currency).upper(),
        customer=_id_of(getattr(obj, "customer", None)),
        transfer_group=getattr(obj, "transfer_group", None) or "",
        metadata=_metadata(obj),
        failure_code=(
            (getattr(last_error, "decline_code", None) or getattr(last_error, "code", None) or "")
            if last_error
            else ""
        ),
        failure_message=(getattr(last_error, "message", None) or "") if last_error else "",
    )


def default_payment_method(customer_id: str) -> str:
    """The customer's saved payment method: its default, else its first card."""
    customer = _call(lambda: client().v1.customers.retrieve(customer_id))
    if getattr(customer, "deleted", False):
        raise PermanentError(f"Customer {customer_id} is deleted", code="resource_missing")
    settings_ = getattr(customer, "invoice_settings", None)
    default = _id_of(getattr(settings_, "default_payment_method", None)) if settings_ else ""
    if default:
        return default
    page = _call(
        lambda: client().v1.payment_methods.list(
            {"customer": customer_id, "type": "card", "limit": 1}
        )
    )
    methods = list(page.data)
    if not methods:
        raise PermanentError(
            f"Customer {customer_id} has no saved payment method", code="no_payment_method"
        )
    return methods[0].id


def payment_intent_create(
    *,
    amount: int,
    currency: str,
    customer: str,
    payment_method: str,
    transfer_group: str,
    metadata: dict[str, str],
    description: str,
    idempotency_key: str,
) -> PaymentInfo:
    """Charge a partner's saved payment method off-session, confirming at once."""
    params = {
        "amount": amount,
        "currency": currency.lower(),
        "customer": customer,
        "payment_method": payment_method,
        "confirm": True,
        "off_session": True,
        "transfer_group": transfer_group,
        "metadata": metadata,
        "description": description,
    }
    return _payment(
        _call(lambda: client().v1.payment_intents.create(params, _options(idempotency_key)))
    )


def payment_intent_retrieve(payment_intent_id: str) -> PaymentInfo:
    return _payment(_call(lambda: client().v1.payment_intents.retrieve(payment_intent_id)))


def payment_intent_cancel(payment_intent_id: str, *, idempotency_key: str) -> PaymentInfo:
    """Cancel a PaymentIntent that has not succeeded, so that it never can. Stripe refuses
    (a `PermanentError`) one that succeeded, is processing or is already cancelled."""
    return _payment(
        _call(
            lambda: client().v1.payment_intents.cancel(
                payment_intent_id, options=_options(idempotency_key)
            )
        )
    )


def payment_intents_of_customer(customer_id: str) -> list[PaymentInfo]:
    """Every payment intent of a customer."""
    try:
        page = _call(
            lambda: client().v1.payment_intents.list({"customer": customer_id, "limit": 100})
        )
    except PermanentError as exc:
        if "customer" not in exc.message:
            raise
        # A Stripe look-alike without the `customer` filter (the local emulator): list all.
        page = _call(lambda: client().v1.payment_intents.list({"limit": 100}))
    payments = _call(lambda: [_payment(obj) for obj in _auto_paging(page)])
    return [payment for payment in payments if payment.customer == customer_id]


@dataclass(frozen=True)
class ChargeInfo:
    """A PaymentIntent's latest charge: what it charged and refunded, in Stripe's units, and
    (when it is disputed) every dispute of it as (id, status, amount)."""

    id: str
    amount: int
    amount_refunded: int
    disputed: bool
    disputes: tuple[tuple[str, str, int], ...] = ()


def payment_intent_charge(payment_intent_id: str) -> ChargeInfo | None:
    """The latest charge of a PaymentIntent, with its disputes when disputed (None: the
    intent has no charge). Reads only."""
    intent = _call(
        lambda: client().v1.payment_intents.retrieve(
            payment_intent_id, {"expand": ["latest_charge"]}
        )
    )
    charge = getattr(intent, "latest_charge", None)
    if charge is None or isinstance(charge, str):
        return None
    disputed = bool(getattr(charge, "disputed", False))
    disputes: tuple[tuple[str, str, int], ...] = ()
    if disputed:
        page = _call(lambda: client().v1.disputes.list({"charge": charge.id, "limit": 100}))
        disputes = _call(
            lambda: tuple((d.id, str(d.status), int(d.amount)) for d in _auto_paging(page))
        )
    return ChargeInfo(
        id=charge.id,
        amount=int(charge.amount),
        amount_refunded=int(getattr(charge, "amount_refunded", 0) or 0),
        disputed=disputed,
        disputes=disputes,
    )


# --------------------------------------------------------------------------- payouts


@dataclass(frozen=True)
class PayoutInfo:
    id: str
    account: str
    status: str
    amount: int
    currency: str
    arrival_date: int | None
    failure_code: str
    failure_message: str


def payout_retrieve(payout_id: str, *, account: str) -> PayoutInfo:
    """A payout of a connected account to its bank."""
    obj = _call(
        lambda: client().v1.payouts.retrieve(payout_id, options=_options(account=account or None))
    )
    return PayoutInfo(
        id=obj.id,
        account=account,
        status=str(obj.status),
        amount=int(obj.amount),
        currency=str(obj.currency).upper(),
        arrival_date=getattr(obj, "arrival_date", None),
        failure_code=getattr(obj, "failure_code", None) or "",
        failure_message=getattr(obj, "failure_message", None) or "",
    )


# --------------------------------------------------------------------------- webhooks


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    type: str
    account: str
    created: int | None
    object_id: str
    object_type: str
    payload: dict


def webhook_verify(payload: bytes, signature_header: str | None) -> WebhookEvent:
    """The event in a webhook body, once its signature over the raw body is proven
    (HMAC-SHA256 with `STRIPE_WEBHOOK_SECRET`, timestamp within the tolerance)."""
    if not signature_header:
        raise SignatureError("No Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(
            payload,
            signature_header,
            settings.STRIPE_WEBHOOK_SECRET,
            tolerance=getattr(settings, "STRIPE_WEBHOOK_TOLERANCE", 300),
        )
    except stripe.SignatureVerificationError as exc:
        raise SignatureError(str(exc)) from exc
    import json

    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise SignatureError("The body is not JSON") from exc
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise SignatureError("The body is not a Stripe event")
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    obj = data.get("object") if isinstance(data.get("object"), dict) else {}
    return WebhookEvent(
        id=body["id"],
        type=str(body.get("type", "")),
        account=str(body.get("account") or ""),
        created=body.get("created") if isinstance(body.get("created"), int) else None,
        object_id=str(obj.get("id", "")),
        object_type=str(obj.get("object", "")),
        payload=body,
    )


# --------------------------------------------------------------------------- onboarding


def connected_account_create(*, email: str, business_name: str, country: str = "US") -> str:
    """A Connect (custom) account for a partner or charity to receive pay-outs; its id."""
    account = _call(
        lambda: client().v1.accounts.create(
            params={
                "type": "custom",
                "country": country,
                "email": email,
                "business_profile": {"name": business_name},
                "capabilities": {"transfers": {"requested": True}},
            }
        )
    )
    return account.id


def account_exists(account_id: str) -> bool:
    """Does Stripe know this connected account (False for a missing one)?"""
    try:
        _call(lambda: client().v1.accounts.retrieve(account_id))
    except PermanentError:
        return False
    return True


def customer_create_with_card(*, email: str, name: str, card: str = "pm_card_visa") -> str:
    """A customer with a saved card as default payment method, to collect from; its id."""
    customer = _call(lambda: client().v1.customers.create(params={"email": email, "name": name}))
    method = _call(
        lambda: client().v1.payment_methods.attach(card, params={"customer": customer.id})
    )
    _call(
        lambda: client().v1.customers.update(
            customer.id, params={"invoice_settings": {"default_payment_method": method.id}}
        )
    )
    return customer.id


def customer_exists(customer_id: str) -> bool:
    try:
        _call(lambda: client().v1.customers.retrieve(customer_id))
    except PermanentError:
        return False
    return True

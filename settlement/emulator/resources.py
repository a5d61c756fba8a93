"""Stripe Connect resources localstripe lacks, built on its ``StripeObject``.

* :class:`Account` - ``/v1/accounts``: connected accounts (``acct_...``).
* :class:`Transfer` - ``/v1/transfers``: money sent to a connected account (``tr_...``), with
  its reversals (:class:`TransferReversal`, ``trr_...``) under
  ``/v1/transfers/{id}/reversals``.
* :class:`CoalitionPaymentIntent` - localstripe's PaymentIntent, also accepting the
  descriptive parameters settlement sends (``transfer_group``, ``description``, ...), and
  answering a declined card with Stripe's ``card_error`` shape.

Conventions of localstripe kept here: validation happens before ``StripeObject.__init__``
(which stores the object), so a rejected request leaves nothing behind; every attribute and
property whose name does not start with ``_`` is exported as a field, so helpers and
constants are underscored.

Deliberately not emulated: balances (a transfer never fails for insufficient funds), the
connected account's side of a transfer (``destination_payment`` is an id that cannot be
retrieved), application fees and destination charges (``transfer_data``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from localstripe.errors import UserError
from localstripe.resources import (
    Charge,
    Event,
    List,
    PaymentIntent,
    PaymentMethod,
    Refund,
    StripeObject,
    random_id,
    store,
    try_convert_to_bool,
    try_convert_to_int,
)
from localstripe.webhooks import schedule_webhook

from .errors import (
    CARD_ERROR,
    invalid_param,
    missing_param,
    no_such,
    stripe_error,
    unknown_params,
)

# --------------------------------------------------------------------------- validation

_EURO_COUNTRIES = frozenset("AT BE CY DE EE ES FI FR GR HR IE IT LT LU LV MT NL PT SI SK".split())
_COUNTRY_CURRENCY = {
    "US": "usd",
    "GB": "gbp",
    "CA": "cad",
    "AU": "aud",
    "NZ": "nzd",
    "CH": "chf",
    "SE": "sek",
    "NO": "nok",
    "DK": "dkk",
    "PL": "pln",
    "JP": "jpy",
    "SG": "sgd",
    "HK": "hkd",
}


def _positive_int(name: str, value: Any) -> int:
    number = try_convert_to_int(value)
    if type(number) is not int or number <= 0:
        raise invalid_param(name, "Invalid positive integer")
    return number


def _currency(name: str, value: Any) -> str:
    if value is None:
        raise missing_param(name)
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        raise invalid_param(name, f"Invalid currency: {value}")
    return value.lower()


def _optional_str(name: str, value: Any, max_length: int = 5000) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise invalid_param(name, f"Invalid string: {name} must be at most {max_length} characters")
    return value


def _optional_dict(name: str, value: Any) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_param(name, f"Invalid object: {name} must be a hash")
    return value


def _metadata(value: Any) -> dict[str, str]:
    """Stripe's metadata rules: up to 50 keys of 40 characters, values of 500 characters."""
    if value is None or value == "":
        return {}
    if not isinstance(value, dict) or len(value) > 50:
        raise invalid_param("metadata", "Invalid metadata: must be a hash of at most 50 keys")
    metadata = {}
    for key, item in value.items():
        item = str(item)
        if len(str(key)) > 40 or len(item) > 500:
            raise invalid_param(
                "metadata",
                "Invalid metadata: keys are at most 40 characters and values at most 500",
            )
        metadata[str(key)] = item
    return metadata


def _merge_metadata(current: dict[str, str], update: Any) -> dict[str, str]:
    """Stripe's update semantics: given keys are set, keys set to "" are removed, and
    ``metadata=""`` removes them all."""
    if update == "":
        return {}
    merged = dict(current)
    for key, value in _metadata(update).items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _created_filter(created: Any) -> Callable[[Any], bool]:
    """``created=<ts>`` or ``created[gt|gte|lt|lte]=<ts>``, as on Stripe's list endpoints."""
    if created is None:
        return lambda obj: True
    if not isinstance(created, dict):
        exact = try_convert_to_int(created)
        if type(exact) is not int:
            raise invalid_param("created", "Invalid timestamp")
        return lambda obj: obj.created == exact
    bounds = {}
    for op, value in created.items():
        bound = try_convert_to_int(value)
        if op not in ("gt", "gte", "lt", "lte") or type(bound) is not int:
            raise invalid_param("created", f"Invalid created filter: {op}")
        bounds[op] = bound
    checks = {
        "gt": lambda c, b: c > b,
        "gte": lambda c, b: c >= b,
        "lt": lambda c, b: c < b,
        "lte": lambda c, b: c <= b,
    }
    return lambda obj: all(checks[op](obj.created, b) for op, b in bounds.items())


# --------------------------------------------------------------------------- lists


class Page(List):
    """One page of a Stripe list (``object``, ``data``, ``has_more``, ``url``).

    localstripe's ``List`` pages by position and silently restarts from the top when the
    ``starting_after`` object is absent; :func:`paginate` does Stripe's cursor paging and
    hands the finished page here only for the export.
    """

    def __init__(self, url: str, items: list, has_more: bool):
        super().__init__(url, limit=max(len(items), 1))
        self._list = list(items)
        self._page_has_more = has_more

    @property
    def has_more(self) -> bool:
        return self._page_has_more


def _limit(value: Any) -> int:
    if value is None:
        return 10
    limit = try_convert_to_int(value)
    if type(limit) is not int or not 1 <= limit <= 100:
        raise invalid_param("limit", "Invalid integer: limit must be between 1 and 100")
    return limit


def _stored(object_type: str) -> list:
    """The visible objects of one type, newest first (the store keeps insertion order)."""
    prefix = object_type + ":"
    return [obj for key, obj in reversed(list(store.items())) if key.startswith(prefix)]


def paginate(
    objects: list,
    url: str,
    *,
    noun: str,
    limit: Any = None,
    starting_after: Any = None,
    ending_before: Any = None,
    keep: Callable[[Any], bool] = lambda obj: True,
) -> Page:
    """Stripe's cursor paging over ``objects`` (newest first), filtered by ``keep``.

    The cursor is located in the unfiltered list, so it may be an object the filter leaves
    out, as on Stripe where cursors are positions in time.
    """
    limit = _limit(limit)
    if starting_after is not None and ending_before is not None:
        raise invalid_param(
            "ending_before",
            "You may only specify one of these parameters: ending_before, starting_after.",
        )

    def position(cursor: Any, param: str) -> int:
        for index, obj in enumerate(objects):
            if obj.id == cursor:
                return index
        raise no_such(noun, str(cursor), param=param)

    if ending_before is not None:
        before = [obj for obj in objects[: position(ending_before, "ending_before")] if keep(obj)]
        return Page(url, before[-limit:], len(before) > limit)
    start = 0 if starting_after is None else position(starting_after, "starting_after") + 1
    after = [obj for obj in objects[start:] if keep(obj)]
    return Page(url, after[:limit], len(after) > limit)


def _reject_unknown(kwargs: dict) -> None:
    if kwargs:
        raise unknown_params(kwargs)


class _RetrieveAndList:
    """Stripe's retrieve and list endpoints for an object type of this module.

    Retrieve answers ``No such <object>`` for an unknown id. List pages with Stripe's cursors
    and filters by ``created`` and by equality on the fields named in ``_list_filters``.

    Mixed in before ``StripeObject``, never in place of it: localstripe finds the class of an
    id to ``expand`` among StripeObject's direct subclasses only.
    """

    object: str
    #: The fields a list request may filter on (``destination=acct_...``), as on Stripe.
    _list_filters: tuple[str, ...] = ()

    @classmethod
    def _api_retrieve(cls, id):
        obj = store.get(cls.object + ":" + id)
        if obj is None:
            raise no_such(cls.object, id)
        return obj

    @classmethod
    def _api_list_all(
        cls, url, limit=None, starting_after=None, ending_before=None, created=None, **filters
    ):
        _reject_unknown(set(filters) - set(cls._list_filters))
        by_created = _created_filter(created)
        wanted = {name: value for name, value in filters.items() if value is not None}

        def keep(obj: Any) -> bool:
            matches = all(getattr(obj, name) == value for name, value in wanted.items())
            return matches and by_created(obj)

        return paginate(
            _stored(cls.object),
            url,
            noun=cls.object,
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            keep=keep,
        )


# --------------------------------------------------------------------------- accounts


class Account(_RetrieveAndList, StripeObject):
    """A connected account. The emulator onboards it at once: charges, payouts and every
    requested capability are enabled, nothing is due."""

    object = "account"
    _id_prefix = "acct_"
    _types = ("standard", "express", "custom", "none")
    _business_types = ("individual", "company", "non_profit", "government_entity")
    _updatable = frozenset(
        {
            "business_profile",
            "business_type",
            "capabilities",
            "default_currency",
            "email",
            "metadata",
            "tos_acceptance",
        }
    )

    def __init__(
        self,
        type=None,
        country=None,
        email=None,
        default_currency=None,
        metadata=None,
        business_type=None,
        business_profile=None,
        capabilities=None,
        tos_acceptance=None,
        controller=None,
        **kwargs,
    ):
        _reject_unknown(kwargs)
        controller = _optional_dict("controller", controller)
        if type is None:
            # Accounts created with `controller` properties instead of a type have type
            # "none" on Stripe; otherwise default to the most common platform choice.
            type = "none" if controller else "custom"
        if type not in self._types:
            raise invalid_param("type", f"Invalid type: must be one of {', '.join(self._types)}")
        country = "US" if country is None else country
        if not isinstance(country, str) or len(country) != 2 or not country.isalpha():
            raise invalid_param("country", f"Invalid country: {country}")
        country = country.upper()
        if default_currency is None:
            default_currency = "eur" if country in _EURO_COUNTRIES else None
            default_currency = default_currency or _COUNTRY_CURRENCY.get(country, "usd")
        default_currency = _currency("default_currency", default_currency)
        email = _optional_str("email", email, 800)
        if business_type is not None and business_type not in self._business_types:
            raise invalid_param("business_type", f"Invalid business_type: {business_type}")
        business_profile = _optional_dict("business_profile", business_profile)
        tos_acceptance = _optional_dict("tos_acceptance", tos_acceptance)
        capabilities = self._capabilities(capabilities)
        metadata = _metadata(metadata)

        # All exceptions must be raised before this point: it stores the object.
        super().__init__()

        self.type = type
        self.country = country
        self.email = email
        self.default_currency = default_currency
        self.metadata = metadata
        self.business_type = business_type
        self.business_profile = business_profile or {}
        self.capabilities = capabilities
        self.tos_acceptance = tos_acceptance or {}
        if controller is not None:
            self.controller = controller
        self.charges_enabled = True
        self.payouts_enabled = True
        self.details_submitted = True
        self.requirements = {
            "currently_due": [],
            "eventually_due": [],
            "past_due": [],
            "pending_verification": [],
            "disabled_reason": None,
        }

    @staticmethod
    def _capabilities(requested: Any) -> dict[str, str]:
        """``capabilities[transfers][requested]=true`` -> ``{"transfers": "active"}``.

        Without any request the account gets the two a marketplace platform asks for.
        """
        requested = _optional_dict("capabilities", requested)
        if not requested:
            return {"card_payments": "active", "transfers": "active"}
        capabilities = {}
        for name, options in requested.items():
            wanted = (
                try_convert_to_bool(options.get("requested")) if isinstance(options, dict) else None
            )
            if type(wanted) is not bool:
                raise invalid_param(f"capabilities[{name}][requested]", "Invalid boolean")
            if wanted:
                capabilities[name] = "active"
        return capabilities

    @classmethod
    def _api_retrieve(cls, id):
        obj = store.get(cls.object + ":" + id)
        if obj is None:
            # What Stripe answers for an account the key cannot see (a PermissionError).
            raise stripe_error(
                403,
                f"The provided key does not have access to account '{id}' (or that account "
                "does not exist). Application access may have been revoked.",
                code="account_invalid",
            )
        return obj

    @classmethod
    def _api_update(cls, id, **data):
        _reject_unknown(set(data) - cls._updatable)
        obj = cls._api_retrieve(id)
        changes = {}
        if "email" in data:
            changes["email"] = _optional_str("email", data["email"], 800)
        if "default_currency" in data:
            changes["default_currency"] = _currency("default_currency", data["default_currency"])
        if "business_type" in data:
            if data["business_type"] not in cls._business_types:
                raise invalid_param(
                    "business_type", f"Invalid business_type: {data['business_type']}"
                )
            changes["business_type"] = data["business_type"]
        for name in ("business_profile", "tos_acceptance"):
            if name in data:
                changes[name] = {**getattr(obj, name), **_optional_dict(name, data[name])}
        if "capabilities" in data:
            changes["capabilities"] = {
                **obj.capabilities,
                **cls._capabilities(data["capabilities"]),
            }
        if "metadata" in data:
            changes["metadata"] = _merge_metadata(obj.metadata, data["metadata"])
        for name, value in changes.items():
            setattr(obj, name, value)
        schedule_webhook(Event("account.updated", obj))
        return obj


def connected_account_exists(account_id: str) -> bool:
    """Whether ``account_id`` names a connected account (accounts are never scoped)."""
    return store.get(Account.object + ":" + account_id) is not None


# --------------------------------------------------------------------------- transfers


class Transfer(_RetrieveAndList, StripeObject):
    """Money sent from the platform balance to a connected account."""

    object = "transfer"
    _id_prefix = "tr_"
    _source_types = ("bank_account", "card", "fpx")
    _list_filters = ("destination", "transfer_group")

    def __init__(
        self,
        amount=None,
        currency=None,
        destination=None,
        description=None,
        metadata=None,
        transfer_group=None,
        source_transaction=None,
        source_type=None,
        **kwargs,
    ):
        _reject_unknown(kwargs)
        if amount is None:
            raise missing_param("amount")
        amount = _positive_int("amount", amount)
        currency = _currency("currency", currency)
        if destination is None:
            raise missing_param("destination")
        if not isinstance(destination, str) or not connected_account_exists(destination):
            raise no_such("destination", str(destination), param="destination", status=400)
        description = _optional_str("description", description)
        transfer_group = _optional_str("transfer_group", transfer_group)
        metadata = _metadata(metadata)
        if source_transaction is not None and (
            not isinstance(source_transaction, str)
            or store.get("charge:" + source_transaction) is None
        ):
            raise no_such("charge", str(source_transaction), param="source_transaction", status=400)
        if source_type is not None and source_type not in self._source_types:
            raise invalid_param("source_type", f"Invalid source_type: {source_type}")

        # All exceptions must be raised before this point: it stores the object.
        super().__init__()

        self.amount = amount
        self.amount_reversed = 0
        self.currency = currency
        self.destination = destination
        self.description = description
        self.metadata = metadata
        self.transfer_group = transfer_group
        self.source_transaction = source_transaction
        self.source_type = source_type or "card"
        # Ids of objects Stripe creates alongside; the emulator does not model them.
        self.balance_transaction = "txn_" + random_id(24)
        self.destination_payment = "py_" + random_id(24)

    @property
    def reversed(self) -> bool:
        """Whether the transfer has been fully reversed, as Stripe defines it."""
        return self.amount_reversed >= self.amount

    @property
    def reversals(self) -> Page:
        """The ten newest reversals, embedded as Stripe does."""
        return paginate(
            self._reversal_objects(), f"/v1/transfers/{self.id}/reversals", noun="reversal"
        )

    def _reversal_objects(self) -> list:
        return [r for r in _stored(TransferReversal.object) if r.transfer == self.id]

    @classmethod
    def _api_create(cls, **data):
        obj = super()._api_create(**data)
        schedule_webhook(Event("transfer.created", obj))
        return obj

    @classmethod
    def _api_update(cls, id, description=None, metadata=None, **kwargs):
        _reject_unknown(kwargs)
        obj = cls._api_retrieve(id)
        if description is not None:
            obj.description = _optional_str("description", description) or None
        if metadata is not None:
            obj.metadata = _merge_metadata(obj.metadata, metadata)
        schedule_webhook(Event("transfer.updated", obj))
        return obj

    # Reversals ---------------------------------------------------------------

    @classmethod
    def _api_create_reversal(
        cls,
        id,
        amount=None,
        description=None,
        metadata=None,
        refund_application_fee=None,
        **kwargs,
    ):
        """Reverse ``amount`` (default: all that remains) of the transfer.

        ``description`` and ``refund_application_fee`` are accepted, as Stripe does, but have
        nothing to act on here (no application fees are modelled).
        """
        _reject_unknown(kwargs)
        transfer = cls._api_retrieve(id)
        remaining = transfer.amount - transfer.amount_reversed
        if remaining <= 0:
            raise stripe_error(400, f"Transfer {id} has already been fully reversed.")
        amount = remaining if amount is None else _positive_int("amount", amount)
        if amount > remaining:
            raise invalid_param(
                "amount",
                f"You cannot reverse {amount}: only {remaining} of transfer {id} remains.",
            )
        _optional_str("description", description)
        metadata = _metadata(metadata)
        if refund_application_fee is not None:
            if type(try_convert_to_bool(refund_application_fee)) is not bool:
                raise invalid_param("refund_application_fee", "Invalid boolean")

        reversal = TransferReversal(transfer, amount, metadata)
        transfer.amount_reversed += amount
        schedule_webhook(Event("transfer.reversed", transfer))
        return reversal

    @classmethod
    def _api_list_reversals(
        cls,
        id,
        limit=None,
        starting_after=None,
        ending_before=None,
        **kwargs,
    ):
        _reject_unknown(kwargs)
        transfer = cls._api_retrieve(id)
        return paginate(
            transfer._reversal_objects(),
            f"/v1/transfers/{id}/reversals",
            noun="reversal",
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
        )

    @classmethod
    def _api_retrieve_reversal(cls, id, reversal, **kwargs):
        _reject_unknown(kwargs)
        cls._api_retrieve(id)
        obj = store.get(TransferReversal.object + ":" + reversal)
        if obj is None or obj.transfer != id:
            raise no_such("transfer reversal", reversal)
        return obj


class TransferReversal(StripeObject):
    """A (partial) reversal of a transfer; created only through the transfer."""

    object = "transfer_reversal"
    _id_prefix = "trr_"

    def __init__(self, transfer: Transfer, amount: int, metadata: dict[str, str]):
        super().__init__()
        self.transfer = transfer.id
        self.amount = amount
        self.currency = transfer.currency
        self.metadata = metadata
        self.source_refund = None
        self.balance_transaction = "txn_" + random_id(24)
        self.destination_payment_refund = "pyr_" + random_id(24)


# --------------------------------------------------------------------------- payment intents

#: What localstripe's PaymentIntent constructor itself accepts (``confirm`` and
#: ``off_session`` are taken by its ``_api_create`` before the constructor is called).
_LOCALSTRIPE_PI_PARAMS = frozenset(inspect.signature(PaymentIntent.__init__).parameters) - {
    "self",
    "kwargs",
}


class CoalitionPaymentIntent(PaymentIntent):
    """localstripe's PaymentIntent, plus the descriptive parameters localstripe rejects.

    Accepted in addition: ``description``, ``transfer_group``, ``statement_descriptor``,
    ``statement_descriptor_suffix``, ``receipt_email``. They are stored, returned, and copied
    to the charge (``description``, ``transfer_group``) as Stripe does. Parameters that would
    need behaviour the emulator lacks (``transfer_data``, ``application_fee_amount``,
    ``on_behalf_of``) are still rejected rather than silently ignored.

    Instances live in localstripe's store under ``payment_intent:``, so localstripe's own
    retrieve, update, confirm, cancel and capture routes work on them unchanged.
    """

    def __init__(
        self,
        description=None,
        transfer_group=None,
        statement_descriptor=None,
        statement_descriptor_suffix=None,
        receipt_email=None,
        **kwargs,
    ):
        _reject_unknown(set(kwargs) - _LOCALSTRIPE_PI_PARAMS)
        description = _optional_str("description", description)
        transfer_group = _optional_str("transfer_group", transfer_group)
        statement_descriptor = _optional_str("statement_descriptor", statement_descriptor, 22)
        statement_descriptor_suffix = _optional_str(
            "statement_descriptor_suffix", statement_descriptor_suffix, 22
        )
        receipt_email = _optional_str("receipt_email", receipt_email, 800)
        kwargs["metadata"] = _metadata(kwargs.get("metadata"))

        super().__init__(**kwargs)

        self.description = description
        self.transfer_group = transfer_group
        self.statement_descriptor = statement_descriptor
        self.statement_descriptor_suffix = statement_descriptor_suffix
        self.receipt_email = receipt_email

    def _stamp_charge(self) -> None:
        """Copy what Stripe copies from the intent to its charge, before any event is sent."""
        charge = self.latest_charge
        if charge is not None:
            charge.description = self.description
            charge.transfer_group = self.transfer_group

    def _on_success(self):
        self._stamp_charge()
        super()._on_success()

    def _report_async_failure(self):
        self._stamp_charge()
        super()._report_async_failure()

    def _report_failure(self):
        """localstripe answers a decline with a bare 402; Stripe's body says more, and
        settlement needs the intent's id from it to record the failed attempt."""
        self._stamp_charge()
        try:
            super()._report_failure()
        except UserError as decline:
            error = decline.body["error"]
            error["type"] = CARD_ERROR
            error.setdefault("decline_code", "generic_decline")
            error["payment_intent"] = self._export()
            charge_pm = self.latest_charge.payment_method
            error["payment_method"] = PaymentMethod._api_retrieve(charge_pm)._export()
            raise


# --------------------------------------------------------------------------- refunds


def _charge_to_refund(charge: Any, payment_intent: Any) -> Any:
    """The charge a refund request names (directly or as its intent's latest charge), or
    ``None`` when it names none that exists (localstripe's own checks then answer)."""
    if isinstance(charge, str):
        return store.get("charge:" + charge)
    if isinstance(payment_intent, str):
        intent = store.get(PaymentIntent.object + ":" + payment_intent)
        return intent.latest_charge if intent is not None else None
    return None


class CoalitionRefund(Refund):
    """localstripe's Refund, with the checks Stripe makes and localstripe lacks.

    * never more than what remains unrefunded on the charge (localstripe refunds any
      amount, and refunds the whole charge again when no amount is given);
    * not on a charge that was charged back (a dispute that is not a mere inquiry);
    * ``reason`` is accepted; ``charge.refunded`` is sent, as Stripe does.
    """

    _reasons = ("duplicate", "fraudulent", "requested_by_customer")

    def __init__(
        self, charge=None, payment_intent=None, amount=None, metadata=None, reason=None, **kwargs
    ):
        _reject_unknown(kwargs)
        if reason is not None and reason not in self._reasons:
            raise invalid_param("reason", f"Invalid reason: must be one of {self._reasons}")
        target = _charge_to_refund(charge, payment_intent)
        if target is not None and target.status == "succeeded":
            remaining = target.amount - target.amount_refunded
            if remaining <= 0:
                raise stripe_error(
                    400,
                    f"Charge {target.id} has already been refunded.",
                    code="charge_already_refunded",
                )
            if any(not d.is_charge_refundable for d in Dispute._of_charge(target.id)):
                raise stripe_error(
                    400,
                    f"Charge {target.id} has been charged back; cannot issue a refund.",
                    code="charge_disputed",
                )
            requested = remaining if amount is None else _positive_int("amount", amount)
            if requested > remaining:
                raise invalid_param(
                    "amount",
                    f"Refund amount ({requested}) is greater than unrefunded amount on "
                    f"charge ({remaining})",
                )
            amount = requested
        _metadata(metadata)

        # localstripe's constructor makes its own checks, then stores the refund.
        super().__init__(
            charge=charge, payment_intent=payment_intent, amount=amount, metadata=metadata
        )
        self.reason = reason
        schedule_webhook(Event("charge.refunded", Charge._api_retrieve(self.charge)))


# --------------------------------------------------------------------------- disputes


class Dispute(_RetrieveAndList, StripeObject):
    """A cardholder's dispute of a charge (``dp_...``).

    Stripe has no API to open one (its test cards do, some time after the charge); here a
    test opens one through the control route ``POST /_coalition/disputes`` and moves it
    through its statuses with ``POST /_coalition/disputes/{id}``. The API reads them
    (``GET /v1/disputes``, filtered by ``charge`` or ``payment_intent``), updates their
    evidence and metadata, and closes them (``POST /v1/disputes/{id}/close``: accepting
    the loss). The disputed charge says ``disputed: true``.

    Funds are withdrawn from the platform while a dispute is open or lost, and given back
    when it is won (:meth:`_funds_withdrawn`); balances themselves are not emulated, so
    ``balance_transactions`` stays empty. Inquiries (``warning_*``) withdraw nothing.
    """

    object = "dispute"
    _id_prefix = "dp_"
    _statuses = (
        "warning_needs_response",
        "warning_under_review",
        "warning_closed",
        "needs_response",
        "under_review",
        "won",
        "lost",
    )
    _closed = frozenset({"warning_closed", "won", "lost"})
    _reasons = (
        "bank_cannot_process",
        "credit_not_processed",
        "customer_initiated",
        "debit_not_authorized",
        "duplicate",
        "fraudulent",
        "general",
        "incorrect_account_details",
        "insufficient_funds",
        "product_not_received",
        "product_unacceptable",
        "subscription_canceled",
        "unrecognized",
    )
    _updatable = frozenset({"evidence", "metadata", "submit"})
    _list_filters = ("charge", "payment_intent")

    def __init__(
        self, charge=None, payment_intent=None, amount=None, reason=None, status=None, **kwargs
    ):
        _reject_unknown(kwargs)
        if (charge is None) == (payment_intent is None):
            raise invalid_param("charge", "Name exactly one of charge and payment_intent")
        target = _charge_to_refund(charge, payment_intent)
        if target is None:
            raise no_such(
                "charge" if charge is not None else "payment_intent",
                str(charge or payment_intent),
                param="charge" if charge is not None else "payment_intent",
                status=400,
            )
        if target.status != "succeeded" or not target.captured:
            raise stripe_error(400, f"Charge {target.id} has not succeeded: nothing to dispute")
        disputable = target.amount - target.amount_refunded
        amount = disputable if amount is None else _positive_int("amount", amount)
        if amount > disputable:
            raise invalid_param(
                "amount", f"Only {disputable} of charge {target.id} can be disputed"
            )
        reason = "fraudulent" if reason is None else reason
        if reason not in self._reasons:
            raise invalid_param("reason", f"Invalid reason: {reason}")
        status = "needs_response" if status is None else status
        if status not in self._statuses or status in self._closed:
            raise invalid_param("status", f"A dispute opens in an open status, not {status}")

        # All exceptions must be raised before this point: it stores the object.
        super().__init__()

        self.amount = amount
        self.currency = target.currency
        self.charge = target.id
        self.payment_intent = target.payment_intent
        self.reason = reason
        self.status = status
        self.metadata = {}
        self.evidence = {}
        self.evidence_details = {
            "due_by": self.created + 7 * 24 * 60 * 60,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        }
        self.balance_transactions = []

    @property
    def is_charge_refundable(self) -> bool:
        """Only an inquiry leaves the charge refundable."""
        return self.status.startswith("warning_")

    def _funds_withdrawn(self) -> bool:
        return not self.status.startswith("warning_") and self.status != "won"

    @classmethod
    def _of_charge(cls, charge_id: str) -> list:
        return [d for d in _stored(cls.object) if d.charge == charge_id]

    @classmethod
    def _open(cls, **data) -> Dispute:
        """The control route's way in (Stripe opens disputes itself)."""
        dispute = cls(**data)
        schedule_webhook(Event("charge.dispute.created", dispute))
        if dispute._funds_withdrawn():
            schedule_webhook(Event("charge.dispute.funds_withdrawn", dispute))
        return dispute

    def _move(self, status: Any) -> None:
        """To ``status`` (the control route, submitting evidence, closing), with the events
        Stripe sends."""
        if status not in self._statuses:
            raise invalid_param("status", f"Invalid status: {status}")
        if self.status in self._closed:
            raise stripe_error(400, f"Dispute {self.id} is already closed ({self.status}).")
        withdrawn = self._funds_withdrawn()
        self.status = status
        if withdrawn and not self._funds_withdrawn():
            schedule_webhook(Event("charge.dispute.funds_reinstated", self))
        elif not withdrawn and self._funds_withdrawn():
            schedule_webhook(Event("charge.dispute.funds_withdrawn", self))
        closed = status in self._closed
        event_type = "charge.dispute.closed" if closed else "charge.dispute.updated"
        schedule_webhook(Event(event_type, self))

    @classmethod
    def _api_update(cls, id, **data):
        _reject_unknown(set(data) - cls._updatable)
        obj = cls._api_retrieve(id)
        if obj.status in cls._closed:
            raise stripe_error(400, f"Dispute {id} is already closed ({obj.status}).")
        evidence = _optional_dict("evidence", data.get("evidence"))
        metadata = data.get("metadata")
        submit = data.get("submit")
        if submit is not None:
            submit = try_convert_to_bool(submit)
            if type(submit) is not bool:
                raise invalid_param("submit", "Invalid boolean")
        if evidence:
            obj.evidence = {**obj.evidence, **evidence}
            obj.evidence_details["has_evidence"] = True
        if metadata is not None:
            obj.metadata = _merge_metadata(obj.metadata, metadata)
        if submit and obj.status in ("needs_response", "warning_needs_response"):
            obj.evidence_details["submission_count"] += 1
            obj._move(obj.status.replace("needs_response", "under_review"))
        else:
            schedule_webhook(Event("charge.dispute.updated", obj))
        return obj

    @classmethod
    def _api_close(cls, id, **kwargs):
        """Accept the dispute: lost (an inquiry is simply closed)."""
        _reject_unknown(kwargs)
        obj = cls._api_retrieve(id)
        obj._move("warning_closed" if obj.status.startswith("warning_") else "lost")
        return obj


def _charge_disputed(charge: Charge) -> bool:
    """Stripe's ``disputed`` field of a charge: it has (had) a dispute."""
    return bool(Dispute._of_charge(charge.id))


def install() -> None:
    """Give localstripe's charges the ``disputed`` field Stripe has. Safe to call twice."""
    if not isinstance(getattr(Charge, "disputed", None), property):
        Charge.disputed = property(_charge_disputed)

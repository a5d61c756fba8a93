"""Onboarding partners: the brand, its commercial terms, stores and API keys."""

import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from coalition.errors import InvalidInput, InvalidState, NotFound
from coalition.models import Account
from coalition.money import CURRENCIES
from coalition.services import system_account_id

from ..models import ApiKey, CommercialTerms, Partner, Store

API_KEY_PREFIX = "ck_live_"
ALL_SCOPES = ("earn", "burn", "read")
_CODE_RE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,31}$")


def api_key_digest(raw_key: str) -> str:
    """The stored form of a key. Keys are 256-bit random, so a plain SHA-256 is enough and
    lets a key be found by an indexed lookup instead of comparing secrets."""
    return hashlib.sha256(raw_key.encode("utf-8", "surrogatepass")).hexdigest()


def _decimal(value: Any, *, field: str, minimum: Decimal = Decimal("0")) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise InvalidInput("Must be a decimal number", field=field) from exc
    if not number.is_finite() or number < minimum:
        raise InvalidInput(f"Must be a number of at least {minimum}", field=field)
    if number.as_tuple().exponent < -6 or number >= Decimal("1000000"):
        raise InvalidInput("At most 6 decimal places and below 1,000,000", field=field)
    return number


def _max_length(column: str) -> int:
    return Partner._meta.get_field(column).max_length


def _stripe_id(value: str | None, prefix: str, column: str, field: str) -> str:
    value = (value or "").strip()
    if len(value) > _max_length(column):
        raise InvalidInput(f"At most {_max_length(column)} characters", field=field)
    if value and not re.fullmatch(rf"{prefix}[A-Za-z0-9_]+", value):
        raise InvalidInput(f"Must look like {prefix}…", field=field)
    return value


def _contact_email(value: str | None) -> str:
    """An optional email address that fits the partner's column."""
    value = (value or "").strip()
    if not value:
        return ""
    if len(value) > _max_length("contact_email"):
        raise InvalidInput(
            f"At most {_max_length('contact_email')} characters", field="contactEmail"
        )
    try:
        validate_email(value)
    except ValidationError as exc:
        raise InvalidInput("Not a valid email address", field="contactEmail") from exc
    return value


def terms_set(
    *,
    partner: Partner,
    issuance_price: Any,
    redemption_price: Any,
    valid_from: datetime | None = None,
    allow_redemption_above_issuance: bool = False,
) -> CommercialTerms:
    """New commercial terms from `valid_from` on (default: now). History is never rewritten:
    terms cannot start in the past of transactions already priced."""
    issuance = _decimal(issuance_price, field="issuancePrice")
    redemption = _decimal(redemption_price, field="redemptionPrice")
    if redemption > issuance and not allow_redemption_above_issuance:
        raise InvalidInput(
            "The redemption price is above the issuance price; the operator must allow it "
            "explicitly",
            field="redemptionPrice",
        )
    now = timezone.now()
    valid_from = valid_from or now
    if valid_from < now - timedelta(seconds=5) and partner.terms.exists():
        raise InvalidInput(
            "New terms cannot start in the past: that would reprice history", field="validFrom"
        )
    try:
        with transaction.atomic():
            return CommercialTerms.objects.create(
                partner=partner,
                valid_from=valid_from,
                issuance_price=issuance,
                redemption_price=redemption,
                allow_redemption_above_issuance=allow_redemption_above_issuance,
            )
    except IntegrityError as exc:
        raise InvalidInput("Terms already start at that moment", field="validFrom") from exc


def api_key_create(
    *, partner: Partner, name: str = "default", scopes: list[str] | tuple[str, ...] = ALL_SCOPES
) -> tuple[ApiKey, str]:
    """A new key for the partner. Returns the key row and the secret, shown only once."""
    scopes = sorted(set(scopes))
    unknown = set(scopes) - set(ALL_SCOPES)
    if unknown or not scopes:
        raise InvalidInput(f"Scopes must be some of {', '.join(ALL_SCOPES)}", field="scopes")
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        partner=partner,
        name=(name or "default")[:100],
        prefix=raw_key[: len(API_KEY_PREFIX) + 6],
        digest=api_key_digest(raw_key),
        scopes=scopes,
    )
    return key, raw_key


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key: the next request made with it is refused."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


@transaction.atomic
def partner_create(
    *,
    code: str,
    name: str,
    currency: str,
    earn_rate: Any,
    issuance_price: Any,
    redemption_price: Any,
    stripe_account_id: str | None = None,
    stripe_customer_id: str | None = None,
    contact_email: str = "",
    allow_redemption_above_issuance: bool = False,
) -> tuple[Partner, str]:
    """Onboard a brand with its first terms and an API key (all scopes).

    Returns the partner and the key's secret, which is shown only once.
    """
    code = (code or "").strip()
    if not _CODE_RE.fullmatch(code):
        raise InvalidInput(
            "The code must be an upper-case slug (A-Z, 0-9, - and _, up to 32)", field="code"
        )
    if Partner.objects.filter(code=code).exists():
        raise InvalidInput(f"A partner with code {code} already exists", field="code")
    name = (name or "").strip()
    if not name or len(name) > _max_length("name"):
        raise InvalidInput(
            f"A name of 1 to {_max_length('name')} characters is required", field="name"
        )
    currency = (currency or "").strip()
    if currency not in CURRENCIES:
        raise InvalidInput(f"Unknown currency {currency!r} (ISO 4217)", field="currency")
    rate = _decimal(earn_rate, field="earnRate")
    if rate.as_tuple().exponent < -4:
        raise InvalidInput("At most 4 decimal places", field="earnRate")
    stripe_account_id = _stripe_id(stripe_account_id, "acct_", "stripe_account_id", "stripeAccount")
    stripe_customer_id = _stripe_id(
        stripe_customer_id, "cus_", "stripe_customer_id", "stripeCustomer"
    )
    contact_email = _contact_email(contact_email)
    partner = Partner.objects.create(
        code=code,
        name=name,
        currency=currency,
        earn_rate=rate,
        stripe_account_id=stripe_account_id,
        stripe_customer_id=stripe_customer_id,
        contact_email=contact_email,
    )
    terms_set(
        partner=partner,
        issuance_price=issuance_price,
        redemption_price=redemption_price,
        valid_from=partner_epoch(),
        allow_redemption_above_issuance=allow_redemption_above_issuance,
    )
    # Open the partner's ledger accounts now, so that its first earns at many tills at once
    # don't all wait on the unique index to create them.
    for kind in (Account.Kind.PARTNER_ISSUED, Account.Kind.PARTNER_REDEEMED):
        system_account_id(kind, partner_id=partner.pk)
    _key, raw_key = api_key_create(partner=partner)
    return partner, raw_key


def partner_epoch() -> datetime:
    """The first terms of a partner apply from the start of time, so nothing is unpriced."""
    return datetime(2000, 1, 1, tzinfo=UTC)


def partner_set_status(*, partner: Partner, status: str) -> Partner:
    """Suspend (no earning, no burning) or reactivate a partner."""
    if status not in Partner.Status.values:
        raise InvalidInput(f"Unknown status {status!r}", field="status")
    partner.status = status
    partner.save(update_fields=["status"])
    return partner


def store_create(*, partner: Partner, code: str, name: str = "") -> Store:
    code = (code or "").strip()
    if not code or len(code) > 64:
        raise InvalidInput("A store code of 1 to 64 characters is required", field="code")
    try:
        with transaction.atomic():
            return Store.objects.create(partner=partner, code=code, name=name)
    except IntegrityError as exc:
        raise InvalidInput(f"Store {code} already exists", field="code") from exc


def partner_get_by_code(*, code: str) -> Partner:
    partner = Partner.objects.filter(code=code).first()
    if partner is None:
        raise NotFound(f"No partner with code {code}", field="code")
    return partner


def require_active_partner(partner: Partner) -> None:
    if partner.status != Partner.Status.ACTIVE:
        raise InvalidState(f"Partner {partner.code} is suspended", field="partner")

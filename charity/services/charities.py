"""Onboarding charities, their causes, and their verification status."""

import re
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.utils import timezone

from coalition import services as ledger

from ..errors import InvalidInput, InvalidState
from ..models import Cause, Charity, CharityStatusChange

# The causes every installation starts with (the data migration seeds the same list).
DEFAULT_CAUSES = (
    ("environment", "Environment"),
    ("education", "Education"),
    ("health", "Health"),
    ("hunger", "Hunger"),
    ("animals", "Animals"),
    ("disaster-relief", "Disaster relief"),
    ("arts", "Arts"),
    ("community", "Community"),
)

# Which status may follow which. Suspension keeps history; reinstating verifies again.
STATUS_TRANSITIONS = {
    Charity.Status.PENDING: {Charity.Status.VERIFIED, Charity.Status.SUSPENDED},
    Charity.Status.VERIFIED: {Charity.Status.SUSPENDED},
    Charity.Status.SUSPENDED: {Charity.Status.VERIFIED},
}

_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
_STRIPE_ACCOUNT_RE = re.compile(r"^acct_[A-Za-z0-9_]+$")


def causes_seed() -> int:
    """Create the default causes that are missing (idempotent). Returns how many it added."""
    added = 0
    for position, (code, name) in enumerate(DEFAULT_CAUSES):
        _, created = Cause.objects.get_or_create(
            code=code, defaults={"name": name, "position": position}
        )
        added += created
    return added


def cause_normalize(value: Any, *, field: str = "cause", active_only: bool = True) -> str:
    """The code of the cause meant by `value` ("Disaster relief", "disaster_relief" and
    "disaster-relief" are one), or InvalidInput listing the causes there are."""
    text = ledger.validate_text(value, field=field, required=True).strip()
    slug = re.sub(r"[\s_]+", "-", text.lower())
    if not Cause.objects.exists():
        # Every installation starts with the default causes (data migration); a table
        # emptied since (a test database flush, a truncate) gets them back on first use
        # instead of refusing every charity.
        causes_seed()
    causes = Cause.objects.filter(active=True) if active_only else Cause.objects.all()
    for cause in causes:
        if slug == cause.code or text.lower() == cause.name.lower():
            return cause.code
    known = ", ".join(causes.values_list("code", flat=True)) or "none configured"
    raise InvalidInput(f"Unknown cause {text!r} (known: {known})", field=field)


def _url(value: Any, *, field: str) -> str:
    value = ledger.validate_text(value, field=field).strip()
    if value:
        try:
            URLValidator(schemes=["http", "https"])(value)
        except ValidationError as exc:
            raise InvalidInput("Must be an http(s) URL", field=field) from exc
    return value


def charity_fields_validate(
    *,
    name: Any,
    registration_number: Any,
    cause: Any,
    country: Any,
    description: Any,
    website: Any,
    logo_url: Any,
    stripe_account_id: Any,
    any_cause: bool = False,
) -> dict[str, Any]:
    """A charity's details, cleaned, or InvalidInput naming the field (nothing written).
    `any_cause` accepts a cause that was since deactivated (a charity keeps its cause)."""
    name = ledger.validate_text(name, field="name", required=True).strip()
    if len(name) > 200:
        raise InvalidInput("At most 200 characters", field="name")
    registration_number = ledger.validate_text(
        registration_number, field="registrationNumber", required=True
    ).strip()
    if len(registration_number) > 64:
        raise InvalidInput("At most 64 characters", field="registrationNumber")
    country = ledger.validate_text(country, field="country", required=True).strip().upper()
    if not _COUNTRY_RE.match(country):
        raise InvalidInput("Must be a two-letter ISO country code", field="country")
    if description is not None and not isinstance(description, str):
        raise InvalidInput("Must be a string", field="description")
    stripe_account_id = ledger.validate_text(stripe_account_id, field="stripeAccount").strip()
    if stripe_account_id and not _STRIPE_ACCOUNT_RE.match(stripe_account_id):
        raise InvalidInput("Must look like acct_…", field="stripeAccount")
    return {
        "name": name,
        "registration_number": registration_number,
        "cause": cause_normalize(cause, active_only=not any_cause),
        "country": country,
        "description": (description or "").strip(),
        "website": _url(website, field="website"),
        "logo_url": _url(logo_url, field="logoUrl"),
        "stripe_account_id": stripe_account_id,
    }


@transaction.atomic
def charity_create(
    *,
    name: Any,
    registration_number: Any,
    cause: Any,
    country: Any = "US",
    description: Any = "",
    website: Any = "",
    logo_url: Any = "",
    stripe_account_id: Any = "",
    status: str = Charity.Status.PENDING,
    changed_by: Any = None,
    reason: str = "",
    now: datetime | None = None,
) -> Charity:
    """Register a charity (pending verification unless the operator vouches for it now).

    The registration number is unique per country. The first status is recorded like every
    later change, with who set it.
    """
    fields = charity_fields_validate(
        name=name,
        registration_number=registration_number,
        cause=cause,
        country=country,
        description=description,
        website=website,
        logo_url=logo_url,
        stripe_account_id=stripe_account_id,
    )
    if status not in Charity.Status.values:
        raise InvalidInput(f"Unknown status {status!r}", field="status")
    duplicate = Charity.objects.filter(
        country=fields["country"], registration_number__iexact=fields["registration_number"]
    )
    if duplicate.exists():
        raise InvalidInput(
            f"A charity with registration number {fields['registration_number']} is already "
            f"registered in {fields['country']}",
            field="registrationNumber",
        )
    try:
        with transaction.atomic():
            charity = Charity.objects.create(status=status, **fields)
    except IntegrityError as exc:  # registered concurrently
        raise InvalidInput(
            f"A charity with registration number {fields['registration_number']} is already "
            f"registered in {fields['country']}",
            field="registrationNumber",
        ) from exc
    CharityStatusChange.objects.create(
        charity=charity,
        from_status="",
        to_status=status,
        changed_by=changed_by,
        reason=reason or "registered",
        created_at=now or timezone.now(),
    )
    return charity


@transaction.atomic
def charity_set_status(
    *,
    charity: Charity,
    status: str,
    changed_by: Any = None,
    reason: str = "",
    now: datetime | None = None,
) -> Charity:
    """Verify, suspend or reinstate a charity, recording who did it and when.

    A suspended charity keeps its history and takes no new donations; money it has not
    been paid yet is held by settlement (see `selectors.charity_payable`) until it is
    verified again.
    """
    reason = ledger.validate_text(reason, field="reason")
    if status not in Charity.Status.values:
        raise InvalidInput(f"Unknown status {status!r}", field="status")
    locked = Charity.objects.select_for_update().get(pk=charity.pk)
    if status not in STATUS_TRANSITIONS.get(locked.status, set()):
        raise InvalidState(
            f"A {locked.get_status_display().lower()} charity cannot become {status}",
            field="status",
        )
    CharityStatusChange.objects.create(
        charity=locked,
        from_status=locked.status,
        to_status=status,
        changed_by=changed_by,
        reason=reason,
        created_at=now or timezone.now(),
    )
    from_status = locked.status
    locked.status = status
    locked.save(update_fields=["status"])
    charity.status = status
    if changed_by is not None:
        from coalition.audit import audit_record  # issue 9: staff actions are audited

        audit_record(
            actor=changed_by,
            action="charity.set_status",
            object_type="charity.charity",
            object_id=locked.pk,
            before={"status": from_status},
            after={"status": status, "reason": reason},
        )
    return locked


def charity_update(
    *,
    charity: Charity,
    name: Any = None,
    cause: Any = None,
    description: Any = None,
    website: Any = None,
    logo_url: Any = None,
    stripe_account_id: Any = None,
) -> Charity:
    """Change a charity's public details (not its identity: country and registration)."""
    fields = charity_fields_validate(
        name=charity.name if name is None else name,
        registration_number=charity.registration_number,
        cause=charity.cause if cause is None else cause,
        country=charity.country,
        description=charity.description if description is None else description,
        website=charity.website if website is None else website,
        logo_url=charity.logo_url if logo_url is None else logo_url,
        stripe_account_id=charity.stripe_account_id
        if stripe_account_id is None
        else stripe_account_id,
        # A charity keeps a cause that was retired since; only a new choice must be active.
        any_cause=cause is None,
    )
    for key, value in fields.items():
        setattr(charity, key, value)
    charity.save(update_fields=list(fields))
    return charity

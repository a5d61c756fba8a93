"""Enrolling members and changing their status."""

import secrets
from datetime import datetime
from typing import Any

from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, transaction
from django.utils import timezone

from ..errors import (
    InvalidInput,
    InvalidState,
)
from ..models import (
    Account,
    LedgerTransaction,
    Member,
)
from .idempotency import _setting
from .posting import validate_text

Kind = LedgerTransaction.Kind


# --------------------------------------------------------------------------- members


def luhn_check_digit(digits: str) -> str:
    """The Luhn check digit that makes `digits + check` valid."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isdigit() and luhn_check_digit(number[:-1]) == number[-1]


def _new_member_number() -> str:
    prefix = _setting("MEMBER_NUMBER_PREFIX")
    body = prefix + "".join(secrets.choice("0123456789") for _ in range(15 - len(prefix)))
    return body + luhn_check_digit(body)


def _new_referral_code() -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no look-alikes
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _fits(value: str, column: str, field: str) -> str:
    """`value` if it fits the member's `column` (shorter than `validate_text`'s limit), else
    the caller's InvalidInput on `field` rather than the database's error."""
    max_length = Member._meta.get_field(column).max_length
    if len(value) > max_length:
        raise InvalidInput(f"At most {max_length} characters", field=field)
    return value


def member_create(
    *,
    email: str,
    display_name: str,
    password: str | None = None,
    birth_date: Any = None,
    referred_by: Member | None = None,
    now: datetime | None = None,
) -> Member:
    """Enrol a member: a unique 16-digit Luhn member number, a wallet and a referral code."""
    email = _fits(validate_text(email, field="email", required=True).strip(), "email", "email")
    if "@" not in email or email.startswith("@") or email.endswith("@") or " " in email:
        raise InvalidInput("Not a valid email address", field="email")
    display_name = _fits(
        validate_text(display_name, field="displayName", required=True).strip(),
        "display_name",
        "displayName",
    )
    if Member.objects.filter(email__iexact=email).exists():
        raise InvalidInput("A member with this email already exists", field="email")
    now = now or timezone.now()
    for _attempt in range(10):
        try:
            with transaction.atomic():
                member = Member.objects.create(
                    member_number=_new_member_number(),
                    email=email,
                    display_name=display_name,
                    birth_date=birth_date,
                    password=make_password(password) if password else "",
                    referral_code=_new_referral_code(),
                    referred_by=referred_by,
                    created_at=now,
                )
                Account.objects.create(
                    kind=Account.Kind.MEMBER_WALLET, member=member, last_activity_at=now
                )
                return member
        except IntegrityError as exc:
            if "email" in str(exc).lower():
                raise InvalidInput(
                    "A member with this email already exists", field="email"
                ) from exc
            # A member number or referral code collided: draw again.
    raise RuntimeError("could not allocate a unique member number")


def member_set_status(*, member: Member, status: str, staff_user: Any = None) -> Member:
    """Suspend, close or reactivate a member. A closed member stays closed. With a staff
    user, the change is in the audit trail (issue 9)."""
    if status not in Member.Status.values:
        raise InvalidInput(f"Unknown status {status!r}", field="status")
    if member.status == Member.Status.CLOSED and status != Member.Status.CLOSED:
        raise InvalidState("A closed member cannot be reopened")
    before = member.status
    with transaction.atomic():
        member.status = status
        member.save(update_fields=["status"])
        if staff_user is not None:
            from ..audit import audit_record

            audit_record(
                actor=staff_user,
                action="member.set_status",
                object_type="coalition.member",
                object_id=member.pk,
                before={"status": before},
                after={"status": status},
            )
    return member


def member_authenticate(*, email: str, password: str) -> Member | None:
    """The active member with this email and password, or None — the same answer for an
    unknown email and a wrong password, and the same work (a hash check) for both."""
    from django.contrib.auth.hashers import check_password

    member = Member.objects.filter(email__iexact=(email or "").strip()).first()
    encoded = member.password if member and member.password else None
    # Run a hash check even without a member, so timing doesn't reveal who is enrolled.
    valid = check_password(password or "", encoded) if encoded else False
    if encoded is None:
        make_password(password or "")
    if not valid or member.status != Member.Status.ACTIVE:
        return None
    return member


def member_set_password(*, member: Member, password: str) -> Member:
    """Set a member's password; every token issued before stops working."""
    if not isinstance(password, str) or not 8 <= len(password) <= 128:
        raise InvalidInput("The password must have 8 to 128 characters", field="password")
    member.password = make_password(password)
    member.token_version += 1
    member.save(update_fields=["password", "token_version"])
    return member

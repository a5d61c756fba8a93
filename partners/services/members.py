"""Members as partners see them: enrolment, linked customer references, birthday bonuses."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from coalition import services as ledger
from coalition.errors import InvalidInput
from coalition.models import LedgerTransaction, Member

from ..models import Partner, PartnerIdentity
from .accounts import require_active_partner

# Separates this HMAC of SECRET_KEY from Django's others (sessions, signing, tokens).
ENROLMENT_PASSWORD_SALT = "partners.member_enroll.password"


@dataclass
class Enrolment:
    member: Member
    replayed: bool = False


def _parse_birth_date(value: str | None) -> dt.date | None:
    if value in (None, ""):
        return None
    try:
        birth_date = dt.date.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("The birth date must be YYYY-MM-DD", field="birthDate") from exc
    today = timezone.now().date()
    if birth_date > today or birth_date.year < today.year - 130:
        raise InvalidInput("The birth date is not plausible", field="birthDate")
    return birth_date


@ledger.ledger_write
def member_enroll(
    *,
    partner: Partner,
    idempotency_key: str,
    email: str,
    display_name: str,
    password: str | None = None,
    birth_date: str | None = None,
    referral_code: str | None = None,
) -> Enrolment:
    """Enrol a member at a partner: a new member number, a referral code of their own, and
    the programme's welcome bonus (operator-funded) when there is one."""
    caller = f"partner:{partner.pk}"
    ledger.validate_idempotency_key(idempotency_key)
    request = {
        "email": (email or "").strip().lower(),
        "display_name": display_name,
        "birth_date": birth_date,
        "referral_code": referral_code,
    }
    request_hash = _enrolment_fingerprint(request, password, secret=settings.SECRET_KEY)
    replay = functools.partial(
        _enrolment_replay,
        caller=caller,
        idempotency_key=idempotency_key,
        request=request,
        password=password,
        request_hash=request_hash,
    )
    replayed = replay()
    if replayed is not None:
        return Enrolment(replayed, replayed=True)
    require_active_partner(partner)
    if password is not None and password != "" and len(password) < 8:
        raise InvalidInput("The password must have at least 8 characters", field="password")
    if password is not None and len(password) > 128:
        raise InvalidInput("The password is too long", field="password")
    referrer = None
    if referral_code:
        referrer = Member.objects.filter(referral_code=referral_code.strip().upper()).first()
        if referrer is None:
            raise InvalidInput("Unknown referral code", field="referralCode")
    try:
        member = ledger.member_create(
            email=email,
            display_name=display_name,
            password=password or None,
            birth_date=_parse_birth_date(birth_date),
            referred_by=referrer,
        )
    except InvalidInput as refusal:
        # The same enrolment sent twice at once (a retry after a timeout): the other one
        # enrolled the email and committed while this one waited for it. Replay it.
        if refusal.field != "email":
            raise
        replayed = replay()
        if replayed is None:
            raise
        return Enrolment(replayed, replayed=True)
    Member.objects.filter(pk=member.pk).update(enrolled_by=partner)
    member.enrolled_by = partner
    welcome = ledger.programme_get().welcome_bonus_points
    if welcome:
        ledger.points_earn(
            caller="system:welcome",
            idempotency_key=f"welcome:{member.pk}",
            member=member,
            operator_points=welcome,
            kind=LedgerTransaction.Kind.BONUS,
            reference="welcome bonus",
            metadata={"breakdown": [_bonus("Welcome bonus", welcome)]},
        )
    ledger.idempotency_record(
        caller=caller,
        idempotency_key=idempotency_key,
        operation="member_enroll",
        request_hash=request_hash,
        result_id=member.pk,
    )
    return Enrolment(member)


def _enrolment_fingerprint(request: dict, password: str | None, *, secret: str | None) -> str:
    """The fingerprint of an enrolment request. The password is in it as an HMAC keyed with
    `secret` (never as is, nor as an unkeyed hash someone with the table could brute-force),
    so the same key with another password is a conflict, not a replay. Without a password
    the fingerprint is the one enrolments had before passwords were fingerprinted."""
    if not password:
        return ledger.request_fingerprint("member_enroll", **request, password_set=False)
    if secret is None:  # the fingerprint of enrolments recorded before passwords were in it
        return ledger.request_fingerprint("member_enroll", **request, password_set=True)
    password_hmac = salted_hmac(
        ENROLMENT_PASSWORD_SALT, password, secret=secret, algorithm="sha256"
    ).hexdigest()
    return ledger.request_fingerprint(
        "member_enroll", **request, password_set=True, password_hmac=password_hmac
    )


def _enrolment_replay(
    *,
    caller: str,
    idempotency_key: str,
    request: dict,
    password: str | None,
    request_hash: str,
) -> Member | None:
    """The member this caller already enrolled under this key, if the request is the same.

    An enrolment recorded before a SECRET_KEY rotation (its key in SECRET_KEY_FALLBACKS),
    or before passwords were fingerprinted (the fingerprint said only that a password was
    set), still replays: the second checks the password against the member's own hash."""
    try:
        record = ledger.idempotency_replay(
            caller=caller,
            idempotency_key=idempotency_key,
            operation="member_enroll",
            request_hash=request_hash,
        )
    except ledger.IdempotencyConflict as conflict:
        member = _earlier_enrolment(
            caller=caller, idempotency_key=idempotency_key, request=request, password=password
        )
        if member is None:
            raise conflict from None
        return member
    return None if record is None else Member.objects.get(pk=record.result_id)


def _earlier_enrolment(
    *, caller: str, idempotency_key: str, request: dict, password: str | None
) -> Member | None:
    """The member enrolled under this key by the same request fingerprinted the way it was
    then (an older SECRET_KEY, or no password HMAC at all), or None."""
    if not password:
        return None  # no password: the fingerprint has not changed
    for secret in [*settings.SECRET_KEY_FALLBACKS, None]:
        try:
            record = ledger.idempotency_replay(
                caller=caller,
                idempotency_key=idempotency_key,
                operation="member_enroll",
                request_hash=_enrolment_fingerprint(request, password, secret=secret),
            )
        except ledger.IdempotencyConflict:
            continue
        if record is None:
            return None
        member = Member.objects.get(pk=record.result_id)
        # The old fingerprint only said a password was set: the member's hash says which.
        if secret is None and not check_password(password, member.password):
            return None
        return member
    return None


def _bonus(label: str, points: int) -> dict:
    return {"kind": "bonus", "label": label, "points": points, "fundedBy": "operator"}


def identity_link(*, partner: Partner, member: Member, customer_reference: str) -> PartnerIdentity:
    """Link the partner's own customer reference to a member, to award by it later."""
    reference = ledger.validate_text(
        customer_reference, field="customerReference", required=True
    ).strip()
    try:
        with transaction.atomic():
            return PartnerIdentity.objects.create(
                partner=partner, member=member, customer_reference=reference
            )
    except IntegrityError as exc:
        existing = PartnerIdentity.objects.filter(
            partner=partner, member=member, customer_reference=reference
        ).first()
        if existing:
            return existing
        raise InvalidInput(
            "This reference or this member is already linked", field="customerReference"
        ) from exc


def birthday_bonuses_grant(*, today: dt.date | None = None) -> int:
    """Give active members whose birthday is today the programme's birthday bonus, once a
    year (the idempotency key names the year). Members born on 29 February celebrate on the
    28th in other years. Returns how many bonuses were given."""
    points = ledger.programme_get().birthday_bonus_points
    if not points:
        return 0
    today = today or timezone.now().date()
    days = [today.day]
    if today.month == 2 and today.day == 28 and not _leap(today.year):
        days.append(29)
    members = Member.objects.filter(
        status=Member.Status.ACTIVE, birth_date__month=today.month, birth_date__day__in=days
    )
    given = 0
    for member in members.iterator(chunk_size=500):
        txn = ledger.points_earn(
            caller="system:birthday",
            idempotency_key=f"birthday:{member.pk}:{today.year}",
            member=member,
            operator_points=points,
            kind=LedgerTransaction.Kind.BONUS,
            reference=f"birthday {today.year}",
            metadata={"breakdown": [_bonus("Birthday bonus", points)]},
            request_hash=ledger.request_fingerprint("birthday", member=member.pk, year=today.year),
        )
        given += 0 if getattr(txn, "replayed", False) else 1
    return given


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)

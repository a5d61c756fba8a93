"""A member's personal data (issue 9): everything held about them, and erasure.

Export. `member_export(member)` returns one JSON-safe dict: the profile, the wallet, every
transaction with its entries, lots, holds, tier and tier history, and a `related` section
with every row of any installed app that points at the member (charity donations and giving
preferences, partner identities, promotion awards, referral rewards, …) found through the
model registry, so an app added later is exported without a change here. Apps may add
sections of their own: `settings.COALITION_PRIVACY["EXPORT_SECTIONS"]`, {name: dotted path
of `fn(member) -> JSON-safe value`}.

Erasure. `member_erase(member=…, staff_user=…)` anonymises the person and keeps the books:
- email → `erased-<id>@invalid`, name → "Erased member", birth date, password and referral
  code cleared, every token revoked, status closed;
- the ledger is never rewritten: transactions, entries, lots, holds, donations and
  settlement lines stay as they are (they name the member only by id and member number, a
  pseudonym once the person behind it is erased), so balances, settlements and receipts
  still tie out;
- active holds are voided, and the remaining positive balance is **forfeited into
  breakage** by an EXPIRE transaction (metadata `reason: erasure`): a closed, anonymous
  wallet can never spend them, and keeping them would leave a liability nobody can claim.
  A negative balance (a refund after spending) stays as it is: it is a debt of record;
- apps remove what links the person to them through erase hooks,
  `settings.COALITION_PRIVACY["ERASE_HOOKS"]`: dotted paths of `fn(member) -> int` (the
  partners app deletes its customer-reference identities, the charity app the giving
  preferences, the web portal the stored sessions);
- the audit trail records who erased whom and what was forfeited — never the erased data.

Both are idempotent: erasing an erased member changes nothing more.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.module_loading import import_string

from ..errors import PermissionDenied
from ..models import (
    Account,
    IdempotencyRecord,
    LedgerTransaction,
    Member,
    MemberTier,
    PointLot,
    RedemptionHold,
    TierChange,
)
from .idempotency import ledger_write, request_fingerprint, transaction_replay
from .posting import Leg, _consume_lots, _lock_wallet, _post, _set_held, system_account_id

ERASED_NAME = "Erased member"
# What the request fingerprint of an erased member's enrolment becomes (no hash matches it).
ERASED_FINGERPRINT = "erased"
COVERED = {Account, LedgerTransaction, PointLot, RedemptionHold, MemberTier, TierChange, Member}


def _privacy_setting(name: str) -> Any:
    defaults = {"EXPORT_SECTIONS": {}, "ERASE_HOOKS": []}
    return getattr(settings, "COALITION_PRIVACY", {}).get(name, defaults[name])


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


# --------------------------------------------------------------------------- export


def member_export(member: Member) -> dict[str, Any]:
    """Everything held about the member, as JSON-safe data (see the module docstring)."""
    from ..audit import snapshot

    member = Member.objects.select_related("referred_by", "enrolled_by").get(pk=member.pk)
    wallet = Account.objects.filter(member=member).first()
    transactions = (
        LedgerTransaction.objects.filter(member=member)
        .select_related("partner", "charity")
        .prefetch_related("entries")
        .order_by("created_at", "id")
    )
    tier_state = MemberTier.objects.select_related("tier").filter(member=member).first()
    export = {
        "exportedAt": timezone.now().isoformat(),
        "profile": {
            "memberNumber": member.member_number,
            "email": member.email,
            "displayName": member.display_name,
            "birthDate": member.birth_date.isoformat() if member.birth_date else None,
            "status": member.status,
            "hasPassword": bool(member.password),
            "referralCode": member.referral_code,
            "referredBy": member.referred_by.member_number if member.referred_by_id else None,
            "enrolledBy": getattr(member.enrolled_by, "code", None),
            "createdAt": _iso(member.created_at),
        },
        "wallet": {
            "balance": wallet.balance if wallet else 0,
            "held": wallet.held if wallet else 0,
            "spendable": wallet.spendable if wallet else 0,
            "lastActivityAt": _iso(wallet.last_activity_at) if wallet else None,
        },
        "transactions": [
            {
                "id": txn.pk,
                "kind": txn.kind,
                "points": txn.member_points,
                "partner": txn.partner.code if txn.partner_id else None,
                "charity": txn.charity.name if txn.charity_id else None,
                "reference": txn.reference,
                "purchaseAmount": str(txn.purchase_amount)
                if txn.purchase_amount is not None
                else None,
                "purchaseCurrency": txn.purchase_currency or None,
                "reversalOf": txn.reversal_of_id,
                "createdAt": _iso(txn.created_at),
                "metadata": txn.metadata,
                "entries": [
                    {"account": entry.account_id, "points": entry.points}
                    for entry in txn.entries.all()
                ],
            }
            for txn in transactions
        ],
        "lots": [
            {
                "id": lot.pk,
                "points": lot.points,
                "remaining": lot.remaining,
                "expiresAt": _iso(lot.expires_at),
                "createdAt": _iso(lot.created_at),
            }
            for lot in PointLot.objects.filter(member=member).order_by("id")
        ],
        "holds": [
            {
                "id": hold.pk,
                "partner": hold.partner.code,
                "points": hold.points,
                "capturedPoints": hold.captured_points,
                "status": hold.status,
                "reference": hold.reference,
                "createdAt": _iso(hold.created_at),
                "expiresAt": _iso(hold.expires_at),
                "resolvedAt": _iso(hold.resolved_at),
            }
            for hold in RedemptionHold.objects.select_related("partner").filter(member=member)
        ],
        "tier": {
            "current": tier_state.tier.code if tier_state else None,
            "since": _iso(tier_state.since) if tier_state else None,
            "history": [
                {
                    "from": change.from_tier.code if change.from_tier_id else None,
                    "to": change.to_tier.code,
                    "qualifyingPoints": change.qualifying_points,
                    "reason": change.reason,
                    "at": _iso(change.created_at),
                }
                for change in TierChange.objects.select_related("from_tier", "to_tier")
                .filter(member=member)
                .order_by("created_at", "id")
            ],
        },
        "related": {},
    }
    for relation in _relations_to_member():
        rows = relation.related_model._default_manager.filter(
            **{relation.field.name: member}
        ).order_by("pk")
        if rows.exists():
            export["related"][relation.related_model._meta.label] = [
                snapshot(row, personal=True) for row in rows
            ]
    for name, dotted in _privacy_setting("EXPORT_SECTIONS").items():
        export[name] = import_string(dotted)(member)
    return export


def _relations_to_member() -> list:
    """Every foreign key of another app's model (or an uncovered one) to Member."""
    return [
        field
        for field in Member._meta.get_fields(include_hidden=True)
        if field.is_relation
        and field.auto_created
        and not field.concrete
        and field.related_model not in COVERED
        and isinstance(field.field, models.ForeignKey | models.OneToOneField)
    ]


# --------------------------------------------------------------------------- erasure


@ledger_write
def member_erase(*, member: Member, staff_user: Any, now: datetime | None = None) -> Member:
    """Anonymise the member and forfeit their points into breakage, keeping the ledger
    balanced and settlement history intact (see the module docstring)."""
    from ..audit import audit_record

    if staff_user is None or not getattr(staff_user, "is_staff", False):
        raise PermissionDenied("Only staff may erase a member's personal data")
    now = now or timezone.now()
    caller = f"staff:{staff_user.pk}"
    idempotency_key = f"erase:{member.pk}"
    wallet = _lock_wallet(member)
    member = Member.objects.get(pk=member.pk)

    voided = list(RedemptionHold.objects.filter(member=member, status=RedemptionHold.Status.ACTIVE))
    for hold in voided:
        hold.status = RedemptionHold.Status.VOIDED
        hold.resolved_at = now
        hold.save(update_fields=["status", "resolved_at"])
    if voided:
        _set_held(wallet, wallet.held - sum(hold.points for hold in voided))

    forfeited = 0
    request_hash = request_fingerprint("member_erase", member=member.pk)
    already = transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if already is None and wallet.balance > 0:
        forfeited = wallet.balance
        lots = _consume_lots(wallet, forfeited)
        _post(
            kind=LedgerTransaction.Kind.EXPIRE,
            legs=[
                Leg(wallet.pk, -forfeited),
                Leg(system_account_id(Account.Kind.BREAKAGE), forfeited),
            ],
            caller=caller,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            created_at=now,
            member_id=member.pk,
            wallet=wallet,
            reference="personal data erased",
            metadata={"reason": "erasure", "lots": lots},
        )

    removed = {hook: import_string(hook)(member) for hook in _privacy_setting("ERASE_HOOKS")}
    # The enrolment's idempotency record fingerprints the email, name and birth date: an
    # unkeyed hash, which someone who guesses them could match to this member. Scrubbed (a
    # retry of that enrolment is then a conflict, not a replay of an erased member).
    IdempotencyRecord.objects.filter(operation="member_enroll", result_id=member.pk).update(
        request_hash=ERASED_FINGERPRINT
    )
    was_erased = member.display_name == ERASED_NAME and member.email.endswith("@invalid")
    member.email = f"erased-{member.pk}@invalid"
    member.display_name = ERASED_NAME
    member.birth_date = None
    member.password = ""
    member.referral_code = None
    member.token_version += 1  # every member token stops working
    member.status = Member.Status.CLOSED
    member.save(
        update_fields=[
            "email",
            "display_name",
            "birth_date",
            "password",
            "referral_code",
            "token_version",
            "status",
        ]
    )
    if not was_erased:
        # Who erased whom and what it cost the member — never the erased data itself.
        audit_record(
            actor=staff_user,
            action="member.erase",
            object_type="coalition.member",
            object_id=member.pk,
            before={"balance": wallet.balance + forfeited, "holdsVoided": len(voided)},
            after={
                "status": member.status,
                "forfeitedPoints": forfeited,
                "balance": wallet.balance,
                "removed": removed,
            },
        )
    return member

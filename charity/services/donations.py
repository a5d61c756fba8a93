"""Donations: points from a member's wallet to a charity, with a receipt, a money value and a
sponsor's match.

One donation is one database transaction that locks, in this order: the member's wallet
(the ledger's DONATE), the matching campaigns that apply (so a campaign's cap is never
exceeded), and last, for the shortest time, the year's receipt counter (so receipt numbers
are unique and a rolled-back donation gives its number back).
"""

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction as db_transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from coalition import services as ledger
from coalition.errors import CoalitionError
from coalition.models import Account, LedgerTransaction, Member
from coalition.money import points_value
from coalition.outbox import celery_task_enqueue

from .. import settlement_bridge
from ..errors import AlreadyReversed, InvalidInput, InvalidState
from ..models import Charity, Donation, MatchingCampaign, ReceiptSequence

logger = logging.getLogger(__name__)

Source = Donation.Source
RECEIPT_PREFIX = "CR"


def receipt_number_next(*, year: int) -> str:
    """The next receipt number of `year` (CR-2026-000123), in the caller's transaction.

    The year's counter row is locked FOR UPDATE until the caller commits: concurrent
    donations queue here, briefly, and get consecutive numbers.
    """
    sequence, _ = ReceiptSequence.objects.select_for_update().get_or_create(year=year)
    sequence.last += 1
    ReceiptSequence.objects.filter(pk=year).update(last=sequence.last)
    return f"{RECEIPT_PREFIX}-{year}-{sequence.last:06d}"


def require_donatable(charity: Charity, *, field: str = "charityId") -> None:
    """Only verified charities take donations (pending and suspended ones refuse)."""
    if charity.status != Charity.Status.VERIFIED:
        state = "suspended" if charity.status == Charity.Status.SUSPENDED else "not verified"
        raise InvalidState(f"{charity.name} is {state} and cannot receive donations", field=field)


@dataclass(frozen=True)
class Match:
    campaign: MatchingCampaign
    points: int


def _campaign_match(
    *, member: Member, charity: Charity, points: int, now: datetime
) -> Match | None:
    """The campaign that matches this donation and by how much, under the campaign's lock.

    The campaigns that apply are locked FOR UPDATE in id order (after the wallet, which the
    donation already holds): a concurrent donation waits, then sees what is left of the cap.
    A charity's own campaign is preferred to a campaign for its whole cause.
    """
    applicable = MatchingCampaign.objects.filter(
        Q(charity=charity) | Q(charity__isnull=True, cause=charity.cause),
        active=True,
        starts_at__lte=now,
        ends_at__gt=now,
        sponsor__status="active",
        matched_points__lt=F("cap_points"),
    )
    ids = list(applicable.values_list("pk", flat=True))
    if not ids:
        return None
    campaigns = list(MatchingCampaign.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
    campaigns.sort(key=lambda campaign: (campaign.charity_id is None, campaign.pk))
    for campaign in campaigns:
        wanted = math.floor(Decimal(points) * campaign.ratio)
        if campaign.per_member_cap_points is not None:
            matched_for_member = (
                Donation.objects.filter(
                    campaign=campaign, member=member, refunded_at__isnull=True
                ).aggregate(total=Sum("matched_points"))["total"]
                or 0
            )
            wanted = min(wanted, campaign.per_member_cap_points - matched_for_member)
        matched = min(wanted, campaign.cap_points - campaign.matched_points)
        if matched > 0:
            return Match(campaign, matched)
    return None


@ledger.ledger_write
def donation_create(
    *,
    member: Member,
    charity: Charity,
    points: Any,
    idempotency_key: str | None,
    caller: str | None = None,
    source: str = Source.MEMBER,
    now: datetime | None = None,
) -> Donation:
    """Give a member's points to a verified charity; returns the donation and its receipt.

    The points leave the wallet (earliest-expiring first) for the charity's account at the
    programme's donation price. A member's own donation must reach the programme's minimum;
    automatic giving (round-up, instead of expiry) has none. A campaign that applies adds
    the sponsor's matching points. A retry with the same idempotency key and payload returns
    the first donation; nothing is written when a rule refuses.
    """
    caller = caller or f"member:{member.pk}"
    if source not in Source.values:
        raise InvalidInput(f"Unknown donation source {source!r}", field="source")
    if idempotency_key is not None:
        ledger.validate_idempotency_key(idempotency_key)
    points = ledger.validate_points(points)
    request_hash = ledger.request_fingerprint(
        "donation_create", member=member.pk, charity=charity.pk, points=points, source=source
    )
    replay = ledger.transaction_replay(
        caller=caller, idempotency_key=idempotency_key, request_hash=request_hash
    )
    if replay is not None:
        return Donation.objects.select_related("charity").get(transaction=replay)
    require_donatable(charity)
    programme = ledger.programme_get()
    if source == Source.MEMBER and points < programme.min_donation_points:
        raise InvalidInput(
            f"At least {programme.min_donation_points} points must be donated", field="points"
        )
    now = now or timezone.now()

    donate = ledger.points_donate(
        caller=caller,
        idempotency_key=idempotency_key,
        member=member,
        charity=charity,
        points=points,
        metadata={"source": source},
        request_hash=request_hash,
        now=now,
    )
    if getattr(donate, "replayed", False):
        # A concurrent retry with the same key committed first (seen under the wallet lock).
        return Donation.objects.select_related("charity").get(transaction=donate)

    match = _campaign_match(member=member, charity=charity, points=points, now=now)
    match_transaction = None
    if match is not None:
        match_transaction = ledger.points_match(
            caller="system:matching",
            idempotency_key=f"donation:{donate.pk}",
            sponsor=match.campaign.sponsor,
            charity=charity,
            points=match.points,
            metadata={
                "campaign": match.campaign.pk,
                "donation_transaction": donate.pk,
                "member": member.pk,
            },
            now=now,
        )
        MatchingCampaign.objects.filter(pk=match.campaign.pk).update(
            matched_points=F("matched_points") + match.points
        )

    donation = Donation.objects.create(
        member=member,
        charity=charity,
        transaction=donate,
        source=source,
        points=points,
        value=points_value(points, programme.donation_price, programme.currency),
        currency=programme.currency,
        donation_price=programme.donation_price,
        campaign=match.campaign if match else None,
        matched_points=match.points if match else 0,
        match_transaction=match_transaction,
        # Last: the receipt counter is the one row every donation of the year queues on.
        receipt_number=receipt_number_next(year=timezone.localtime(now).year),
        created_at=now,
    )
    if source == Source.MEMBER:
        # Automatic giving is listed on the annual statement instead of a mail per earn.
        # The receipt mail is recorded in the outbox in this very transaction (issue 9): it
        # is sent once the donation commits, even if the broker is down at that moment.
        celery_task_enqueue("charity.tasks.email_receipt", donation.pk)
    return donation


@ledger.ledger_write
def donation_refund(
    *,
    donation: Donation,
    refunded_by: Any,
    reason: str,
    now: datetime | None = None,
) -> Donation:
    """An operator gives a donation's points back to the member, and takes back the
    sponsor's match, as long as no settlement run has claimed it for the charity.

    Members cannot undo a donation; this is the operator's correction (reversing
    transactions, the originals stay). The campaign's cap is freed by the match taken back.
    Points given back to a closed (erased) member go on to breakage (`transaction_reverse`).
    """
    reason = ledger.validate_text(reason, field="reason", required=True)
    if refunded_by is None or not getattr(refunded_by, "is_staff", False):
        raise InvalidInput("Only operator staff can refund a donation", field="refundedBy")
    now = now or timezone.now()
    # The wallet first (as every ledger write), then the donation row.
    ledger.wallets_lock(member_ids=[donation.member_id])
    locked = Donation.objects.select_for_update().get(pk=donation.pk)
    if locked.refunded_at is not None:
        raise AlreadyReversed("The donation is already refunded", field="donationId")
    if _claimed(locked):
        raise InvalidState(
            "The donation was already settled to the charity and cannot be refunded",
            field="donationId",
        )
    return _refund(
        locked, caller=f"staff:{refunded_by.pk}", refunded_by=refunded_by, reason=reason, now=now
    )


def _claimed(donation: Donation) -> bool:
    """Has a settlement run claimed the donation or its match for the charity?"""
    claimed = [donation.transaction_id] + (
        [donation.match_transaction_id] if donation.match_transaction_id else []
    )
    return settlement_bridge.transactions_claimed(transaction_ids=claimed)


def _refund(
    locked: Donation, *, caller: str, refunded_by: Any, reason: str, now: datetime
) -> Donation:
    """Refund a donation the caller has checked and locked (after the member's wallet):
    reverse its DONATE and its match, free the campaign's cap, mark the receipt refunded
    and record it in the audit trail (`refunded_by` None: the system did it)."""
    locked.refund_transaction = ledger.transaction_reverse(
        caller=caller,
        idempotency_key=f"donation-refund:{locked.pk}",
        transaction_to_reverse=locked.transaction,
        reason=reason,
        now=now,
    )
    if locked.match_transaction_id:
        locked.match_refund_transaction = ledger.points_match_reverse(
            caller=caller,
            idempotency_key=f"donation-match-refund:{locked.pk}",
            match_transaction=locked.match_transaction,
            reason=reason,
            now=now,
        )
        campaign = MatchingCampaign.objects.select_for_update().get(pk=locked.campaign_id)
        MatchingCampaign.objects.filter(pk=campaign.pk).update(
            matched_points=F("matched_points") - locked.matched_points
        )
    locked.refunded_at = now
    locked.refunded_by = refunded_by
    locked.refund_reason = reason
    locked.save(
        update_fields=[
            "refund_transaction",
            "match_refund_transaction",
            "refunded_at",
            "refunded_by",
            "refund_reason",
        ]
    )
    from coalition.audit import audit_record  # issue 9: staff actions are audited

    audit_record(
        actor=refunded_by,
        action="donation.refund",
        object_type="charity.donation",
        object_id=locked.pk,
        before={"refunded": False, "points": locked.points, "matchedPoints": locked.matched_points},
        after={
            "refunded": True,
            "reason": reason,
            "refundTransaction": locked.refund_transaction_id,
            "matchRefundTransaction": locked.match_refund_transaction_id,
        },
    )
    return locked


# --------------------------------------------------------------------------- refunded earns

ROUND_UP_CALLER = "system:round-up"


def round_up_key(earn_id: int, *, reversed_points: int | None = None) -> str:
    """The idempotency key (caller ROUND_UP_CALLER) of an earn's round-up donation, or of
    the donation re-issued for the share kept once `reversed_points` of the earn were
    reversed."""
    if reversed_points is None:
        return f"round-up:{earn_id}"
    return f"round-up:{earn_id}:kept-after:{reversed_points}"


def round_up_refund_on_reversal(event: Any) -> Donation | None:
    """A reversal hook (`coalition.services.reversals`, before the reversal posts): refund
    the round-up donation of a refunded earn, in proportion.

    The charity keeps floor(round-up × unreversed points / earned points) — the round-up
    rule itself, applied to what is left of the earn, rounded down in the member's favour;
    so a full reversal refunds all of it. The donation is refunded through the refund path
    (its DONATE and match reversed, the campaign's cap freed, the receipt marked refunded);
    a share kept is given again as a new round-up donation with a new receipt, dated,
    priced and matched (in proportion, from the same campaign) as the first one. The
    points come back to the member before the reversal takes the earn back.

    Left as it is (the member bears the share, as a debt if the wallet cannot cover it):
    - a donation a settlement run has claimed for the charity (the money is, or is being,
      paid out; a refund can no longer reach it);
    - a partial reversal whose kept share the wallet cannot give again (a member in debt,
      or closed): giving it back in full would take it from the charity, so nothing moves
      and the next (full) reversal refunds it all;
    - a round-up staff already refunded.
    """
    earn = event.original
    if earn.kind != LedgerTransaction.Kind.EARN or earn.member_id is None:
        return None
    # The first round-up, and the re-issues after each earlier partial reversal.
    keys = [round_up_key(earn.pk)]
    reversed_so_far = 0
    for points in earn.reversals.order_by("id").values_list("member_points", flat=True):
        reversed_so_far += abs(points)
        keys.append(round_up_key(earn.pk, reversed_points=reversed_so_far))
    donations = {
        donation.transaction.idempotency_key: donation
        for donation in Donation.objects.select_related("transaction").filter(
            transaction__caller=ROUND_UP_CALLER,
            transaction__idempotency_key__in=keys,
            member_id=earn.member_id,
        )
    }
    first = donations.get(keys[0])
    live = [donation for donation in donations.values() if donation.refunded_at is None]
    if first is None or not live:
        return None
    # The member's wallet is locked (the reversal's caller); then the donation row.
    live_donation = Donation.objects.select_for_update().get(pk=live[0].pk)
    if live_donation.refunded_at is not None:
        return None
    earned = earn.member_points
    kept = first.points * (earned - event.reversed_after) // earned
    if kept >= live_donation.points or _claimed(live_donation):
        return None
    reason = f"transaction {earn.pk} reversed"
    try:
        with db_transaction.atomic():  # a refused re-issue undoes the refund too
            _refund(
                live_donation,
                caller=ROUND_UP_CALLER,
                refunded_by=None,
                reason=reason,
                now=event.now,
            )
            if kept == 0:
                return live_donation
            return _round_up_reissue(
                live_donation,
                points=kept,
                idempotency_key=round_up_key(earn.pk, reversed_points=event.reversed_after),
                now=event.now,
            )
    except CoalitionError as refusal:
        logger.warning(
            "round-up %s of reversed earn %s left whole: %s", live_donation.pk, earn.pk, refusal
        )
        return None


def _round_up_reissue(
    refunded: Donation, *, points: int, idempotency_key: str, now: datetime
) -> Donation:
    """Give again the share of a refunded round-up that the charity keeps: a new DONATE from
    the member's wallet and a new receipt, at the first donation's date and price, matched
    by its campaign in proportion (rounded down; none if the sponsor is no longer active).
    Not the member's activity: their last activity is left as it was."""
    member = refunded.member
    last_activity = (
        Account.objects.filter(member_id=member.pk).values_list("last_activity_at", flat=True).get()
    )
    donate = ledger.points_donate(
        caller=ROUND_UP_CALLER,
        idempotency_key=idempotency_key,
        member=member,
        charity=refunded.charity,
        points=points,
        metadata={"source": Source.ROUND_UP, "reissueOf": refunded.pk},
        now=now,
    )
    Account.objects.filter(member_id=member.pk).update(last_activity_at=last_activity)
    campaign = refunded.campaign
    matched = refunded.matched_points * points // refunded.points
    match_transaction = None
    if matched > 0 and campaign.sponsor.status == "active":
        campaign = MatchingCampaign.objects.select_for_update().get(pk=campaign.pk)
        match_transaction = ledger.points_match(
            caller="system:matching",
            idempotency_key=f"donation:{donate.pk}",
            sponsor=campaign.sponsor,
            charity=refunded.charity,
            points=matched,
            metadata={
                "campaign": campaign.pk,
                "donation_transaction": donate.pk,
                "member": member.pk,
            },
            now=now,
        )
        # The refund just freed at least as much of the cap.
        MatchingCampaign.objects.filter(pk=campaign.pk).update(
            matched_points=F("matched_points") + matched
        )
    else:
        matched = 0
    return Donation.objects.create(
        member=member,
        charity=refunded.charity,
        transaction=donate,
        source=Source.ROUND_UP,
        points=points,
        value=points_value(points, refunded.donation_price, refunded.currency),
        currency=refunded.currency,
        donation_price=refunded.donation_price,
        campaign=campaign if matched else None,
        matched_points=matched,
        match_transaction=match_transaction,
        receipt_number=receipt_number_next(year=timezone.localtime(now).year),
        created_at=refunded.created_at,
    )


def donation_for_transaction(*, transaction: LedgerTransaction) -> Donation | None:
    """The donation a DONATE transaction belongs to, if it was made through this app."""
    return Donation.objects.filter(transaction=transaction).first()

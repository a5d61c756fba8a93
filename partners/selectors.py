"""Reads for partners: terms in force, API key look-up, catalogues, promotions."""

import hmac
from datetime import datetime, timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from coalition.errors import NotFound

from .models import ApiKey, CommercialTerms, Partner, PartnerIdentity, Promotion, Reward
from .services.accounts import API_KEY_PREFIX, api_key_digest

LAST_USED_RESOLUTION = timedelta(minutes=1)


def terms_at(*, partner: Partner, moment: datetime) -> CommercialTerms:
    """The commercial terms in force for the partner at that moment."""
    terms = (
        CommercialTerms.objects.filter(partner=partner, valid_from__lte=moment)
        .order_by("-valid_from")
        .first()
    )
    if terms is None:
        raise NotFound(f"Partner {partner.code} has no terms in force at {moment}")
    return terms


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """The active key matching this secret, or None. Found by the digest (an indexed look-up,
    so no secret is ever compared with ==); last-used is recorded at most once a minute so
    that busy tills sharing a key don't all write the same row."""
    if not isinstance(raw_key, str) or not raw_key.startswith(API_KEY_PREFIX):
        return None
    if len(raw_key) > 200:
        return None
    digest = api_key_digest(raw_key)
    key = ApiKey.objects.select_related("partner").filter(digest=digest).first()
    if key is None or not hmac.compare_digest(key.digest, digest) or key.revoked_at:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
    return key


def partners_list(*, include_suspended: bool = False) -> QuerySet:
    partners = Partner.objects.all()
    if not include_suspended:
        partners = partners.filter(status=Partner.Status.ACTIVE)
    return partners.order_by("code")


def partner_get(*, partner_id: int) -> Partner:
    partner = Partner.objects.filter(pk=partner_id).first()
    if partner is None:
        raise NotFound("No such partner")
    return partner


def member_id_by_reference(*, partner: Partner, customer_reference: str) -> int:
    """The member a partner linked to its own customer reference."""
    identity = PartnerIdentity.objects.filter(
        partner=partner, customer_reference=customer_reference
    ).first()
    if identity is None:
        raise NotFound("No member is linked to this customer reference", field="customerReference")
    return identity.member_id


def promotions_in_force(*, partner: Partner, moment: datetime) -> list[Promotion]:
    """The partner's own and the coalition-wide promotions whose window contains `moment`."""
    return list(
        Promotion.objects.filter(
            Q(partner=partner) | Q(partner__isnull=True),
            active=True,
            starts_at__lte=moment,
            ends_at__gt=moment,
        )
        .prefetch_related("tiers")
        .order_by("id")
    )


def rewards_available(*, partner: Partner | None = None, now: datetime | None = None) -> QuerySet:
    """Rewards a member can redeem now: active, in their window, in stock, partner active."""
    now = now or timezone.now()
    rewards = Reward.objects.select_related("partner").filter(
        active=True, partner__status=Partner.Status.ACTIVE
    )
    rewards = rewards.filter(Q(starts_at__isnull=True) | Q(starts_at__lte=now))
    rewards = rewards.filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now))
    rewards = rewards.filter(Q(stock__isnull=True) | Q(stock__gt=0))
    if partner is not None:
        rewards = rewards.filter(partner=partner)
    return rewards.order_by("points_cost", "name")

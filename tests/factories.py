"""factory_boy factories and helpers that build through the services."""

from decimal import Decimal

import factory

from charity.models import Charity
from coalition import services
from partners.models import Partner


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Partner

    code = factory.Sequence(lambda n: f"P{n:04d}")
    name = factory.Sequence(lambda n: f"Partner {n}")
    currency = "USD"
    earn_rate = Decimal("1")


class CharityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Charity

    name = factory.Sequence(lambda n: f"Charity {n}")
    registration_number = factory.Sequence(lambda n: f"REG-{n:05d}")
    cause = "environment"
    status = Charity.Status.VERIFIED


_member_seq = iter(range(1, 10**9))


def member(**kwargs):
    """A member enrolled through the service (so it has a wallet)."""
    n = next(_member_seq)
    kwargs.setdefault("email", f"member{n}@example.com")
    kwargs.setdefault("display_name", f"Member {n}")
    return services.member_create(**kwargs)


_key_seq = iter(range(1, 10**12))


def key(prefix: str = "k") -> str:
    """A fresh idempotency key."""
    return f"{prefix}-{next(_key_seq)}"


def earn(member, partner, points, **kwargs):
    kwargs.setdefault("caller", f"partner:{partner.pk}")
    kwargs.setdefault("idempotency_key", key("earn"))
    return services.points_earn(member=member, partner=partner, partner_points=points, **kwargs)


def burn(member, partner, points, **kwargs):
    kwargs.setdefault("caller", f"partner:{partner.pk}")
    kwargs.setdefault("idempotency_key", key("burn"))
    return services.points_burn(member=member, partner=partner, points=points, **kwargs)

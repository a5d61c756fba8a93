"""Types shared by every app's schema."""

from __future__ import annotations

import graphene

from .scalars import Decimal


class Money(graphene.ObjectType):
    """An exact amount in an ISO 4217 currency."""

    amount = Decimal(required=True)
    currency = graphene.String(required=True)

    @staticmethod
    def of(amount, currency: str) -> dict | None:
        if amount is None:
            return None
        return {"amount": amount, "currency": currency}


def choice_value(value):
    """A model choice as its stored value ("earn"), whether the attribute holds the plain
    string (read from the database) or the TextChoices member (just created)."""
    return getattr(value, "value", value)

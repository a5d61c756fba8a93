"""Charities and donations as the API shows them (reads through charity.selectors)."""

from __future__ import annotations

from decimal import Decimal

import graphene

from charity.models import Charity as CharityModel
from charity.models import Donation as DonationModel
from coalition.money import round_money

from ..core.auth import principal_of
from ..core.connections import CountableConnection
from ..core.dataloaders import loaders_for
from ..core.scalars import DateTime
from ..core.types import Money, choice_value


class Charity(graphene.ObjectType):
    """A verified nonprofit members can give points to. Public."""

    class Meta:
        interfaces = (graphene.relay.Node,)

    name = graphene.String(required=True)
    registration_number = graphene.String(required=True)
    cause = graphene.String(required=True, description="The cause's code, e.g. 'health'.")
    total_donated_points = graphene.Int(
        required=True, description="Points members gave it (refunded donations excluded)."
    )
    total_matched_points = graphene.Int(
        required=True, description="Points sponsors added to those donations."
    )
    country = graphene.String(required=True, description="ISO 3166 code.")
    description = graphene.String(required=True)
    website = graphene.String(description="Empty: none.")
    logo_url = graphene.String(description="Empty: none.")

    @classmethod
    def is_type_of(cls, root, info):
        return isinstance(root, CharityModel)

    @classmethod
    def get_node(cls, info, pk):
        from charity.selectors import charities_listed, charities_with_totals

        if principal_of(info).is_staff:
            return charities_with_totals(CharityModel.objects.filter(pk=pk)).first()
        return charities_listed().filter(pk=pk).first()

    @staticmethod
    def resolve_total_donated_points(root, info):
        from charity.selectors import charity_total_donated_points

        return charity_total_donated_points(charity=root)

    @staticmethod
    def resolve_total_matched_points(root, info):
        from charity.selectors import charity_total_matched_points

        return charity_total_matched_points(charity=root)

    @staticmethod
    def resolve_website(root, info):
        return root.website or None

    @staticmethod
    def resolve_logo_url(root, info):
        return root.logo_url or None


class CharityConnection(CountableConnection):
    class Meta:
        node = Charity
        strict_types = True


class Donation(graphene.ObjectType):
    """Points a member gave to a charity, with its receipt. Seen by that member only."""

    class Meta:
        interfaces = (graphene.relay.Node,)

    charity = graphene.Field(Charity, required=True)
    points = graphene.Int(required=True)
    value = graphene.Field(
        Money, required=True, description="At the programme's donation price then."
    )
    matched_points = graphene.Int(
        required=True, description="Added by a sponsoring partner's campaign."
    )
    receipt_number = graphene.String(required=True)
    created_at = DateTime(required=True)
    refunded = graphene.Boolean(required=True, description="Refunded by the operator.")
    source = graphene.String(
        required=True, description="member (given by hand), round_up or expiry (automatic)."
    )
    receipt_url = graphene.String(
        required=True, description="The printable receipt (member session or member token)."
    )
    paid_to_charity_at = DateTime(
        description="When settlement paid it to the charity (null: not yet)."
    )
    settlement_transfer_id = graphene.String(
        description="The Stripe transfer that carried it to the charity (null: not yet)."
    )

    @classmethod
    def is_type_of(cls, root, info):
        return isinstance(root, DonationModel)

    @classmethod
    def get_node(cls, info, pk):
        from charity.selectors import donation_get
        from coalition.errors import NotFound

        principal = principal_of(info)
        viewer = principal.viewer
        if viewer.member_id is None and not viewer.staff:
            return None
        try:
            return donation_get(
                donation_id=pk, member=principal.member if not viewer.staff else None
            )
        except NotFound:
            return None

    @staticmethod
    def resolve_charity(root, info):
        return loaders_for(info).charities().load(root.charity_id)

    @staticmethod
    def resolve_value(root, info):
        # The same digits whether the row was just written or read back (a replay).
        return Money.of(round_money(Decimal(root.value), root.currency), root.currency)

    @staticmethod
    def resolve_refunded(root, info):
        return root.refunded_at is not None

    @staticmethod
    def resolve_source(root, info):
        return choice_value(root.source)

    @staticmethod
    def resolve_receipt_url(root, info):
        return f"/charity/receipts/{root.receipt_number}/"

    @staticmethod
    def resolve_paid_to_charity_at(root, info):
        disbursement = _disbursement(root)
        return disbursement[2] if disbursement else None

    @staticmethod
    def resolve_settlement_transfer_id(root, info):
        disbursement = _disbursement(root)
        return disbursement[1] if disbursement else None


def _disbursement(donation):
    """(run id, transfer id, paid at) or None, read once per donation object."""
    if not hasattr(donation, "_api_disbursement"):
        from charity.selectors import donation_disbursement

        donation._api_disbursement = donation_disbursement(donation)
    return donation._api_disbursement


class DonationConnection(CountableConnection):
    class Meta:
        node = Donation
        strict_types = True


class GivingPreferences(graphene.ObjectType):
    """A member's automatic giving: a share of every earn, and points about to expire."""

    round_up_charity = graphene.Field(Charity, description="Null: round-up is off.")
    round_up_percent = graphene.Int(description="Share of every earn given, 1–100.")
    expiry_charity = graphene.Field(
        Charity, description="Points about to expire go to it instead (null: off)."
    )

    @staticmethod
    def resolve_round_up_charity(root, info):
        return loaders_for(info).charities().load(root.round_up_charity_id)

    @staticmethod
    def resolve_expiry_charity(root, info):
        return loaders_for(info).charities().load(root.expiry_charity_id)

"""Charity mutations: a member gives points (charity.services.donation_create) and chooses
their automatic giving (charity.services.giving_preferences_update)."""

from __future__ import annotations

import graphene

from ..coalition.types import Member
from ..core.mutations import BaseMutation, Payload, decode_id
from ..core.permissions import IsMember
from .types import Donation, GivingPreferences


def _charity(global_id, *, field: str):
    """The charity an id names: NOT_FOUND for an unknown one or one never verified (members
    never saw it); a suspended one is returned, for the service to refuse it by name."""
    from charity.selectors import charity_get_for_member
    from coalition.errors import NotFound

    try:
        return charity_get_for_member(charity_id=decode_id(global_id, "Charity", field=field))
    except NotFound as error:
        raise NotFound(error.message, field=field) from error


class DonatePointsInput(graphene.InputObjectType):
    charity_id = graphene.ID(required=True)
    points = graphene.Int(required=True)
    idempotency_key = graphene.String(required=True)


class DonatePointsPayload(Payload):
    donation = graphene.Field(Donation)
    member = graphene.Field(Member)


class DonatePoints(BaseMutation):
    """Give some of your points to a verified charity; you get a receipt number."""

    class Arguments:
        input = DonatePointsInput(required=True)

    class Meta:
        output = DonatePointsPayload

    permission = IsMember()

    @classmethod
    def perform(cls, info, principal, input):
        from charity.services import donation_create

        donation = donation_create(
            member=principal.member,
            charity=_charity(input.charity_id, field="charityId"),
            points=input.points,
            idempotency_key=input.idempotency_key,
        )
        return DonatePointsPayload(donation=donation, member=principal.member, errors=[])


class UpdateGivingPreferencesInput(graphene.InputObjectType):
    round_up_charity_id = graphene.ID(
        description="Give a share of every earn to this charity; null switches round-up off."
    )
    round_up_percent = graphene.Int(description="The share, 1–100 (with roundUpCharityId).")
    expiry_charity_id = graphene.ID(
        description="Give points about to expire to this charity; null switches it off."
    )


class UpdateGivingPreferencesPayload(Payload):
    giving_preferences = graphene.Field(GivingPreferences)
    member = graphene.Field(Member)


class UpdateGivingPreferences(BaseMutation):
    """Choose your automatic giving. Fields left out keep their value; null switches off."""

    class Arguments:
        input = UpdateGivingPreferencesInput(required=True)

    class Meta:
        output = UpdateGivingPreferencesPayload

    permission = IsMember()

    @classmethod
    def perform(cls, info, principal, input):
        from charity.services import giving_preferences_update

        changes = {}
        if "round_up_charity_id" in input:
            changes["round_up_charity"] = (
                _charity(input.round_up_charity_id, field="roundUpCharityId")
                if input.round_up_charity_id is not None
                else None
            )
            # Switching round-up off needs no share.
            if input.round_up_charity_id is None and "round_up_percent" not in input:
                changes["round_up_percent"] = None
        if "round_up_percent" in input:
            changes["round_up_percent"] = input.round_up_percent
        if "expiry_charity_id" in input:
            changes["expiry_charity"] = (
                _charity(input.expiry_charity_id, field="expiryCharityId")
                if input.expiry_charity_id is not None
                else None
            )
        preferences = giving_preferences_update(member=principal.member, **changes)
        return UpdateGivingPreferencesPayload(
            giving_preferences=preferences, member=principal.member, errors=[]
        )


class CharityMutations(graphene.ObjectType):
    donate_points = DonatePoints.Field()
    update_giving_preferences = UpdateGivingPreferences.Field()

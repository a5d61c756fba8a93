"""Charity queries: the public list of verified charities, and a member's giving choices."""

from __future__ import annotations

import graphene

from ..core.connections import connection_field, connection_from_page, keyset_page
from ..core.dataloaders import loaders_for
from ..core.permissions import AllowAny, IsMember, permission_required
from .types import CharityConnection, GivingPreferences


class CharityQueries(graphene.ObjectType):
    charities = connection_field(
        CharityConnection,
        description="Verified charities members can give to, by name.",
        cause=graphene.String(description="A cause code or name, e.g. 'health'."),
        country=graphene.String(description="An ISO 3166 country code, e.g. 'US'."),
    )
    giving_preferences = graphene.Field(
        GivingPreferences,
        required=True,
        description="Your automatic giving (member token).",
    )

    @staticmethod
    @permission_required(AllowAny())
    def resolve_charities(root, info, first=None, after=None, cause=None, country=None):
        from charity.selectors import charities_listed

        page = keyset_page(
            charities_listed(cause=cause, country=country),
            ordering=("name", "id"),
            first=first,
            after=after,
        )
        loader = loaders_for(info).charities()
        for charity in page.rows:
            loader.prime(charity.pk, charity)
        return connection_from_page(CharityConnection, page)

    @staticmethod
    @permission_required(IsMember())
    def resolve_giving_preferences(root, info):
        from charity.selectors import giving_preferences_get

        from ..core.auth import principal_of

        return giving_preferences_get(member=principal_of(info).member)

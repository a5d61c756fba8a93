"""Finance queries (staff with api.view_finance)."""

from __future__ import annotations

import graphene

from coalition.errors import CoalitionError

from ..core.connections import connection_field, connection_from_page, keyset_page
from ..core.errors import api_error
from ..core.permissions import VIEW_FINANCE, permission_required
from . import sources
from .types import Liability, SettlementRunConnection


class SettlementQueries(graphene.ObjectType):
    settlement_runs = connection_field(SettlementRunConnection, description="Newest first.")
    liability = graphene.Field(Liability, required=True)

    @staticmethod
    @permission_required(VIEW_FINANCE)
    def resolve_settlement_runs(root, info, first=None, after=None):
        try:
            runs = sources.settlement_runs()
        except CoalitionError as error:
            raise api_error(error) from error
        page = keyset_page(runs, ordering=("-id",), first=first, after=after)
        return connection_from_page(SettlementRunConnection, page)

    @staticmethod
    @permission_required(VIEW_FINANCE)
    def resolve_liability(root, info):
        try:
            return sources.liability()
        except CoalitionError as error:
            raise api_error(error) from error

"""Partner queries."""

from __future__ import annotations

import graphene

from ..core.permissions import AllowAny, permission_required
from .types import Partner


class PartnerQueries(graphene.ObjectType):
    partners = graphene.List(
        graphene.NonNull(Partner),
        required=True,
        description="The coalition's active brands, by code. Public.",
    )

    @staticmethod
    @permission_required(AllowAny())
    def resolve_partners(root, info):
        from partners.selectors import partners_list

        return list(partners_list())

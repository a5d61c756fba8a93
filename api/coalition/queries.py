"""Programme queries: the member themselves, a member by number, any object by id."""

from __future__ import annotations

import graphene
from graphql_relay import from_global_id

from coalition.errors import NotFound

from ..core.auth import principal_of
from ..core.permissions import VIEW_MEMBERS, AllowAny, IsMember, PartnerKey, permission_required
from .types import Member


class CoalitionQueries(graphene.ObjectType):
    me = graphene.Field(Member, description="The member of the member token.")
    member = graphene.Field(
        Member,
        member_number=graphene.String(required=True),
        description="A member by number (partner key with the read scope, or staff); null "
        "when there is no such member.",
    )
    node = graphene.Field(
        graphene.relay.Node,
        id=graphene.ID(required=True),
        description="Any object by its id, if the caller may see it (else null).",
    )

    @staticmethod
    @permission_required(IsMember())
    def resolve_me(root, info):
        return principal_of(info).member

    @staticmethod
    @permission_required(PartnerKey("read") | VIEW_MEMBERS)
    def resolve_member(root, info, member_number):
        from coalition.selectors import member_get_by_number

        try:
            return member_get_by_number(member_number=member_number)
        except NotFound:
            return None

    @staticmethod
    @permission_required(AllowAny())
    def resolve_node(root, info, id):
        """Decode the id and ask the type for the object; each type's `get_node` applies the
        caller's visibility, so another partner's transaction is null like a missing one."""
        if not isinstance(id, str) or len(id) > 200:
            return None
        type_name, raw_pk = from_global_id(id)
        if not raw_pk.isdigit() or len(raw_pk) > 18:
            return None
        graphql_type = info.schema.get_type(type_name) if type_name else None
        graphene_type = getattr(graphql_type, "graphene_type", None)
        interfaces = getattr(getattr(graphene_type, "_meta", None), "interfaces", ())
        if graphene.relay.Node not in interfaces or not hasattr(graphene_type, "get_node"):
            return None
        return graphene_type.get_node(info, int(raw_pk))

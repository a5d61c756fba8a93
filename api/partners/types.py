"""Partner brands as the API shows them."""

from __future__ import annotations

import graphene

from partners.models import Partner as PartnerModel
from partners.models import WebhookEndpoint as WebhookEndpointModel

from ..core.auth import principal_of
from ..core.scalars import DateTime, Decimal


class Partner(graphene.ObjectType):
    """A brand of the coalition: where members earn and spend points. Public."""

    class Meta:
        interfaces = (graphene.relay.Node,)

    code = graphene.String(required=True)
    name = graphene.String(required=True)
    currency = graphene.String(required=True)
    earn_rate = Decimal(required=True, description="Base points per currency unit spent.")

    @classmethod
    def is_type_of(cls, root, info):
        return isinstance(root, PartnerModel)

    @classmethod
    def get_node(cls, info, pk):
        from partners.selectors import partners_list

        return partners_list().filter(pk=pk).first()


class WebhookEndpoint(graphene.ObjectType):
    """Where Coalition posts a partner's events (signed; see partners/webhooks.py)."""

    class Meta:
        interfaces = (graphene.relay.Node,)

    url = graphene.String(required=True)
    active = graphene.Boolean(required=True)
    created_at = DateTime(required=True)

    @classmethod
    def is_type_of(cls, root, info):
        return isinstance(root, WebhookEndpointModel)

    @classmethod
    def get_node(cls, info, pk):
        from partners.webhooks import endpoints_of

        principal = principal_of(info)
        if not principal.is_partner:
            return None
        return endpoints_of(partner=principal.partner).filter(pk=pk).first()

    @staticmethod
    def resolve_active(root, info):
        return root.disabled_at is None

"""Settlement runs and their lines as finance staff see them (settlement/models.py)."""

from __future__ import annotations

import graphene
from graphql_relay import to_global_id

from coalition.money import round_money

from ..charity.types import Charity
from ..core.auth import principal_of
from ..core.connections import CountableConnection
from ..core.dataloaders import loaders_for
from ..core.scalars import DateTime, Decimal
from ..core.types import Money, choice_value
from ..partners.types import Partner

SettlementStatus = graphene.Enum(
    "SettlementStatus",
    [
        ("DRAFT", "draft"),
        ("APPROVED", "approved"),
        ("EXECUTING", "executing"),
        ("COMPLETED", "completed"),
        ("PARTIALLY_FAILED", "partially_failed"),
        ("DISCARDED", "discarded"),
    ],
)
SettlementDirection = graphene.Enum(
    "SettlementDirection",
    [("PAY_OUT", "pay_out"), ("COLLECT", "collect"), ("CARRY_FORWARD", "carry_forward")],
)
SettlementLineStatus = graphene.Enum(
    "SettlementLineStatus",
    [
        ("PENDING", "pending"),
        ("PROCESSING", "processing"),
        ("PAID", "paid"),
        ("FAILED", "failed"),
        ("CARRIED_FORWARD", "carried_forward"),
    ],
)


def _money(amount, currency):
    return Money.of(round_money(amount, currency), currency)


class SettlementLine(graphene.ObjectType):
    """What one partner or charity is paid (positive) or pays (negative) in a run."""

    id = graphene.ID(required=True)
    partner = graphene.Field(Partner)
    charity = graphene.Field(Charity)
    issued_points = graphene.Int(required=True)
    redeemed_points = graphene.Int(required=True)
    donated_points = graphene.Int(required=True)
    net_amount = graphene.Field(
        Money, required=True, description="Positive: the operator pays; negative: collects."
    )
    direction = graphene.Field(SettlementDirection, required=True)
    status = graphene.Field(SettlementLineStatus, required=True)
    stripe_object_id = graphene.String(description="Transfer or payment id once executed.")

    @staticmethod
    def resolve_id(root, info):
        return to_global_id("SettlementLine", root.pk)

    @staticmethod
    def resolve_partner(root, info):
        return loaders_for(info).partners().load(root.partner_id)

    @staticmethod
    def resolve_charity(root, info):
        return loaders_for(info).charities().load(root.charity_id)

    @staticmethod
    def resolve_net_amount(root, info):
        return _money(root.net_amount, root.currency)

    @staticmethod
    def resolve_direction(root, info):
        return choice_value(root.direction)

    @staticmethod
    def resolve_status(root, info):
        return choice_value(root.status)

    @staticmethod
    def resolve_stripe_object_id(root, info):
        return root.stripe_object_id or None


class SettlementRun(graphene.ObjectType):
    """One settlement of every unsettled ledger transaction up to `periodEnd`."""

    class Meta:
        interfaces = (graphene.relay.Node,)

    status = graphene.Field(SettlementStatus, required=True)
    period_end = DateTime(required=True)
    lines = graphene.List(graphene.NonNull(SettlementLine), required=True)
    total_paid_out = graphene.Field(Money, required=True)
    total_collected = graphene.Field(Money, required=True)
    operator_revenue = graphene.Field(Money, required=True)

    @classmethod
    def is_type_of(cls, root, info):
        from settlement.models import SettlementRun as SettlementRunModel

        return isinstance(root, SettlementRunModel)

    @classmethod
    def get_node(cls, info, pk):
        from coalition.errors import CoalitionError

        from ..core.permissions import VIEW_FINANCE
        from . import sources

        if not VIEW_FINANCE.allows(principal_of(info)):
            return None
        try:
            return sources.settlement_run_get(run_id=pk)
        except CoalitionError:
            return None

    @staticmethod
    def resolve_status(root, info):
        return choice_value(root.status)

    @staticmethod
    def resolve_lines(root, info):
        from . import sources

        lines = list(sources.settlement_run_lines(run=root))
        loaders = loaders_for(info)
        loaders.partners().expect(line.partner_id for line in lines)
        loaders.charities().expect(line.charity_id for line in lines)
        return lines

    @staticmethod
    def resolve_total_paid_out(root, info):
        return _money(root.total_paid_out, root.currency)

    @staticmethod
    def resolve_total_collected(root, info):
        return _money(root.total_collected, root.currency)

    @staticmethod
    def resolve_operator_revenue(root, info):
        return _money(root.operator_revenue, root.currency)


class SettlementRunConnection(CountableConnection):
    class Meta:
        node = SettlementRun
        strict_types = True


class Liability(graphene.ObjectType):
    """The points members hold, as a debt of the operator (settlement.selectors.liability)."""

    outstanding_points = graphene.Int(required=True, description="All member balances and holds.")
    estimated_cost = graphene.Field(
        Money, required=True, description="What redeeming them would cost at current terms."
    )
    held_points = graphene.Int(required=True, description="Of which reserved by holds.")
    cost_per_point = Decimal(
        required=True, description="Current prices weighted by the last 90 days' redemptions."
    )
    as_of = DateTime(required=True)

    @staticmethod
    def resolve_estimated_cost(root, info):
        return _money(root.estimated_cost, root.currency)

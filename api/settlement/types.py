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
    matched_points = graphene.Int(
        required=True, description="Sponsor matches: issued (partner) or received (charity)."
    )
    net_amount = graphene.Field(
        Money, required=True, description="Positive: the operator pays; negative: collects."
    )
    carried_in = graphene.Field(
        Money, required=True, description="Amounts carried forward from earlier runs, included."
    )
    direction = graphene.Field(SettlementDirection, required=True)
    status = graphene.Field(SettlementLineStatus, required=True)
    stripe_object_id = graphene.String(description="Transfer or payment id once executed.")
    hold_reason = graphene.String(description="Why the line is carried forward.")
    failure_reason = graphene.String(description="Stripe's reason, when the line failed.")
    attempt = graphene.Int(required=True, description="Stripe attempts (retries add one).")
    statement_url = graphene.String(
        required=True, description="The counterparty's statement (CSV) for this run."
    )

    @staticmethod
    def resolve_carried_in(root, info):
        return _money(root.carried_in_amount, root.currency)

    @staticmethod
    def resolve_hold_reason(root, info):
        return root.hold_reason or None

    @staticmethod
    def resolve_failure_reason(root, info):
        return root.failure_reason or None

    @staticmethod
    def resolve_statement_url(root, info):
        from django.urls import reverse

        if root.partner_id:
            kwargs = {"run_id": root.run_id, "partner_id": root.partner_id}
            return reverse("settlement-partner-statement", kwargs=kwargs)
        kwargs = {"run_id": root.run_id, "charity_id": root.charity_id}
        return reverse("settlement-charity-statement", kwargs=kwargs)

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


class ReconciliationDifference(graphene.ObjectType):
    """One way Stripe and the run disagree."""

    kind = graphene.String(
        required=True,
        description="missing, extra, duplicate, amount_mismatch, destination_mismatch or "
        "status_mismatch",
    )
    line_id = graphene.ID(description="The line concerned, if any.")
    stripe_id = graphene.String()
    expected = graphene.String(required=True)
    actual = graphene.String(required=True)
    message = graphene.String(required=True)

    @staticmethod
    def resolve_line_id(root, info):
        return to_global_id("SettlementLine", root["line"]) if root.get("line") else None

    @staticmethod
    def resolve_stripe_id(root, info):
        return root.get("stripe_id")

    @staticmethod
    def resolve_kind(root, info):
        return root["kind"]

    @staticmethod
    def resolve_expected(root, info):
        return root["expected"]

    @staticmethod
    def resolve_actual(root, info):
        return root["actual"]

    @staticmethod
    def resolve_message(root, info):
        return root["message"]


class Reconciliation(graphene.ObjectType):
    """What Stripe holds for a run compared with its lines, at one moment."""

    clean = graphene.Boolean(required=True)
    checked_at = DateTime(required=True)
    checked_lines = graphene.Int(required=True)
    stripe_objects = graphene.Int(required=True)
    differences = graphene.List(graphene.NonNull(ReconciliationDifference), required=True)

    @staticmethod
    def resolve_checked_at(root, info):
        return root.created_at


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
    currency = graphene.String(required=True)
    created_at = DateTime(required=True)
    approved_at = DateTime()
    completed_at = DateTime()
    claimed_transactions = graphene.Int(required=True)
    total_carried_forward = graphene.Field(
        Money, required=True, description="Left for the next run (signed: + owed to others)."
    )
    total_carried_in = graphene.Field(Money, required=True)
    spread_revenue = graphene.Field(Money, required=True)
    breakage_revenue = graphene.Field(Money, required=True)
    match_revenue = graphene.Field(Money, required=True)
    rounding_revenue = graphene.Field(Money, required=True)
    float_start = graphene.Field(
        Money, required=True, description="Outstanding-points float (docs/settlement.md)."
    )
    float_end = graphene.Field(Money, required=True)
    outstanding_points_end = graphene.Int(required=True)
    reconciliation = graphene.Field(Reconciliation, description="The latest, if any.")
    lines_export_url = graphene.String(required=True, description="Every line, as CSV.")

    @staticmethod
    def resolve_reconciliation(root, info):
        from . import sources

        return sources.reconciliation_latest(run=root)

    @staticmethod
    def resolve_lines_export_url(root, info):
        from django.urls import reverse

        return reverse("settlement-lines", kwargs={"run_id": root.pk})

    @staticmethod
    def resolve_total_carried_forward(root, info):
        return _money(root.carried_forward, root.currency)

    @staticmethod
    def resolve_total_carried_in(root, info):
        return _money(root.carried_in, root.currency)

    @staticmethod
    def resolve_spread_revenue(root, info):
        return _money(root.spread_revenue, root.currency)

    @staticmethod
    def resolve_breakage_revenue(root, info):
        return _money(root.breakage_revenue, root.currency)

    @staticmethod
    def resolve_match_revenue(root, info):
        return _money(root.match_revenue, root.currency)

    @staticmethod
    def resolve_rounding_revenue(root, info):
        return _money(root.rounding_revenue, root.currency)

    @staticmethod
    def resolve_float_start(root, info):
        return _money(root.float_start, root.currency)

    @staticmethod
    def resolve_float_end(root, info):
        return _money(root.float_end, root.currency)

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
    breakage_points_12m = graphene.Int(
        required=True, description="Points expired in the last 12 months."
    )
    breakage_revenue_12m = graphene.Field(
        Money, required=True, description="Breakage booked by runs ending in the last 12 months."
    )

    @staticmethod
    def resolve_estimated_cost(root, info):
        return _money(root.estimated_cost, root.currency)

    @staticmethod
    def resolve_breakage_revenue_12m(root, info):
        return _money(root.breakage_revenue_12m, root.currency)

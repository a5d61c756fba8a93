"""Finance mutations: create, approve and execute settlement runs (staff)."""

from __future__ import annotations

import graphene

from ..core.mutations import BaseMutation, Payload, decode_id
from ..core.permissions import APPROVE_SETTLEMENT, MANAGE_SETTLEMENT
from ..core.scalars import DateTime
from . import sources
from .types import SettlementLine, SettlementRun


class CreateSettlementRunInput(graphene.InputObjectType):
    period_end = DateTime(required=True)


class SettlementRunActionInput(graphene.InputObjectType):
    run_id = graphene.ID(required=True)


class SettlementRunPayload(Payload):
    run = graphene.Field(SettlementRun)


def _run_action(action, principal, input, **extra):
    """Resolve the run's id, let the service act as the staff user, return the run."""
    run_id = decode_id(input.run_id, "SettlementRun", field="runId")
    run = action(user=principal.user, run_id=run_id, **extra)
    return SettlementRunPayload(run=run, errors=[])


def _line_action(action, principal, input, **extra):
    """Resolve the line's id, let the service act as the staff user, return the line."""
    line_id = decode_id(input.line_id, "SettlementLine", field="lineId")
    line = action(user=principal.user, line_id=line_id, **extra)
    return SettlementLinePayload(line=line, errors=[])


class CreateSettlementRun(BaseMutation):
    """A draft run settling every unsettled transaction before `periodEnd`."""

    class Arguments:
        input = CreateSettlementRunInput(required=True)

    class Meta:
        output = SettlementRunPayload

    permission = MANAGE_SETTLEMENT

    @classmethod
    def perform(cls, info, principal, input):
        run = sources.settlement_run_create(user=principal.user, period_end=input.period_end)
        return SettlementRunPayload(run=run, errors=[])


class ApproveSettlementRun(BaseMutation):
    class Arguments:
        input = SettlementRunActionInput(required=True)

    class Meta:
        output = SettlementRunPayload

    permission = APPROVE_SETTLEMENT

    @classmethod
    def perform(cls, info, principal, input):
        return _run_action(sources.settlement_run_approve, principal, input)


class ExecuteSettlementRun(BaseMutation):
    class Arguments:
        input = SettlementRunActionInput(required=True)

    class Meta:
        output = SettlementRunPayload

    permission = MANAGE_SETTLEMENT

    @classmethod
    def perform(cls, info, principal, input):
        return _run_action(sources.settlement_run_execute, principal, input)


class DiscardSettlementRunInput(graphene.InputObjectType):
    run_id = graphene.ID(required=True)
    reason = graphene.String()


class DiscardSettlementRun(BaseMutation):
    """Throw a draft away: its transactions return to the pool for the next run."""

    class Arguments:
        input = DiscardSettlementRunInput(required=True)

    class Meta:
        output = SettlementRunPayload

    permission = MANAGE_SETTLEMENT

    @classmethod
    def perform(cls, info, principal, input):
        return _run_action(
            sources.settlement_run_discard, principal, input, reason=input.reason or ""
        )


class ReconcileSettlementRun(BaseMutation):
    """Compare the run with what Stripe holds now (the result is `run.reconciliation`)."""

    class Arguments:
        input = SettlementRunActionInput(required=True)

    class Meta:
        output = SettlementRunPayload

    permission = MANAGE_SETTLEMENT

    @classmethod
    def perform(cls, info, principal, input):
        return _run_action(sources.settlement_run_reconcile, principal, input)


class SettlementLineActionInput(graphene.InputObjectType):
    line_id = graphene.ID(required=True)
    reason = graphene.String()


class SettlementLinePayload(Payload):
    line = graphene.Field(SettlementLine)


class RetrySettlementLine(BaseMutation):
    """Try a failed line again through Stripe (a new attempt)."""

    class Arguments:
        input = SettlementLineActionInput(required=True)

    class Meta:
        output = SettlementLinePayload

    permission = MANAGE_SETTLEMENT

    @classmethod
    def perform(cls, info, principal, input):
        return _line_action(sources.settlement_line_retry, principal, input)


class CarryForwardSettlementLine(BaseMutation):
    """Give up on a failed line for this run: its amount joins the next run."""

    class Arguments:
        input = SettlementLineActionInput(required=True)

    class Meta:
        output = SettlementLinePayload

    permission = MANAGE_SETTLEMENT

    @classmethod
    def perform(cls, info, principal, input):
        return _line_action(
            sources.settlement_line_carry_forward, principal, input, reason=input.reason or ""
        )


class SettlementMutations(graphene.ObjectType):
    create_settlement_run = CreateSettlementRun.Field()
    approve_settlement_run = ApproveSettlementRun.Field()
    execute_settlement_run = ExecuteSettlementRun.Field()
    discard_settlement_run = DiscardSettlementRun.Field()
    reconcile_settlement_run = ReconcileSettlementRun.Field()
    retry_settlement_line = RetrySettlementLine.Field()
    carry_forward_settlement_line = CarryForwardSettlementLine.Field()

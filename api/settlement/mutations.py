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
        run_id = decode_id(input.run_id, "SettlementRun", field="runId")
        run = sources.settlement_run_approve(user=principal.user, run_id=run_id)
        return SettlementRunPayload(run=run, errors=[])


class ExecuteSettlementRun(BaseMutation):
    class Arguments:
        input = SettlementRunActionInput(required=True)

    class Meta:
        output = SettlementRunPayload

    permission = MANAGE_SETTLEMENT

    @classmethod
    def perform(cls, info, principal, input):
        run_id = decode_id(input.run_id, "SettlementRun", field="runId")
        run = sources.settlement_run_execute(user=principal.user, run_id=run_id)
        return SettlementRunPayload(run=run, errors=[])


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
        run_id = decode_id(input.run_id, "SettlementRun", field="runId")
        run = sources.settlement_run_discard(
            user=principal.user, run_id=run_id, reason=input.reason or ""
        )
        return SettlementRunPayload(run=run, errors=[])


class ReconcileSettlementRun(BaseMutation):
    """Compare the run with what Stripe holds now (the result is `run.reconciliation`)."""

    class Arguments:
        input = SettlementRunActionInput(required=True)

    class Meta:
        output = SettlementRunPayload

    permission = MANAGE_SETTLEMENT

    @classmethod
    def perform(cls, info, principal, input):
        run_id = decode_id(input.run_id, "SettlementRun", field="runId")
        run = sources.settlement_run_reconcile(user=principal.user, run_id=run_id)
        return SettlementRunPayload(run=run, errors=[])


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
        line_id = decode_id(input.line_id, "SettlementLine", field="lineId")
        line = sources.settlement_line_retry(user=principal.user, line_id=line_id)
        return SettlementLinePayload(line=line, errors=[])


class CarryForwardSettlementLine(BaseMutation):
    """Give up on a failed line for this run: its amount joins the next run."""

    class Arguments:
        input = SettlementLineActionInput(required=True)

    class Meta:
        output = SettlementLinePayload

    permission = MANAGE_SETTLEMENT

    @classmethod
    def perform(cls, info, principal, input):
        line_id = decode_id(input.line_id, "SettlementLine", field="lineId")
        line = sources.settlement_line_carry_forward(
            user=principal.user, line_id=line_id, reason=input.reason or ""
        )
        return SettlementLinePayload(line=line, errors=[])


class SettlementMutations(graphene.ObjectType):
    create_settlement_run = CreateSettlementRun.Field()
    approve_settlement_run = ApproveSettlementRun.Field()
    execute_settlement_run = ExecuteSettlementRun.Field()
    discard_settlement_run = DiscardSettlementRun.Field()
    reconcile_settlement_run = ReconcileSettlementRun.Field()
    retry_settlement_line = RetrySettlementLine.Field()
    carry_forward_settlement_line = CarryForwardSettlementLine.Field()

"""Finance mutations: create, approve and execute settlement runs (staff)."""

from __future__ import annotations

import graphene

from ..core.mutations import BaseMutation, Payload, decode_id
from ..core.permissions import APPROVE_SETTLEMENT, MANAGE_SETTLEMENT
from ..core.scalars import DateTime
from . import sources
from .types import SettlementRun


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


class SettlementMutations(graphene.ObjectType):
    create_settlement_run = CreateSettlementRun.Field()
    approve_settlement_run = ApproveSettlementRun.Field()
    execute_settlement_run = ExecuteSettlementRun.Field()

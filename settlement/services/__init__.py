"""Writes of the settlement app: runs and their lifecycle, execution through Stripe, Stripe
webhooks, reconciliation and statements. See docs/settlement.md."""

from .common import APPROVE_SETTLEMENT, MANAGE_SETTLEMENT, require_staff
from .computation import (
    aggregate_claims,
    claim_transactions,
    compute_run,
    fraction_to_decimal,
    round_fraction,
)
from .execution import ExecutionResult, line_metadata, run_execute_lines, run_finish_if_done
from .reconciliation import run_reconcile
from .runs import (
    line_carry_forward,
    line_retry,
    run_approve,
    run_create,
    run_discard,
    run_execute,
)
from .statements import run_lines_csv, statement_csv, statement_rows, statements_announce
from .webhooks import stripe_event_process, stripe_event_receive

__all__ = [
    "APPROVE_SETTLEMENT",
    "MANAGE_SETTLEMENT",
    "ExecutionResult",
    "aggregate_claims",
    "claim_transactions",
    "compute_run",
    "fraction_to_decimal",
    "line_carry_forward",
    "line_metadata",
    "line_retry",
    "round_fraction",
    "run_approve",
    "run_create",
    "run_discard",
    "run_execute",
    "run_execute_lines",
    "run_finish_if_done",
    "run_lines_csv",
    "run_reconcile",
    "statement_csv",
    "statement_rows",
    "require_staff",
    "statements_announce",
    "stripe_event_process",
    "stripe_event_receive",
]

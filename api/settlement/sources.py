"""The settlement API's one door into the settlement app (its selectors and services).

Every settlement read and write of the API goes through these functions, so the GraphQL
layer never touches settlement's tables itself.
"""

from __future__ import annotations

from datetime import datetime


def settlement_runs():
    """Every run (the query pages them newest first by id)."""
    from settlement.selectors import runs_list

    return runs_list()


def settlement_run_get(*, run_id: int):
    """One run by id (NotFound on "runId" otherwise)."""
    from settlement.selectors import run_get

    return run_get(run_id=run_id)


def settlement_run_lines(*, run):
    """A run's lines, with their partner or charity."""
    from settlement.selectors import run_lines

    return run_lines(run=run)


def liability():
    """Outstanding points and what redeeming them would cost now (settlement.selectors)."""
    from settlement.selectors import liability as liability_now

    return liability_now()


def settlement_run_create(*, user, period_end: datetime):
    """A draft run up to `period_end`, with its lines and totals."""
    from settlement.services import run_create

    return run_create(period_end=period_end, created_by=user)


def settlement_run_approve(*, user, run_id: int):
    """Approve a draft (by someone other than its creator)."""
    from settlement.services import run_approve

    return run_approve(run=settlement_run_get(run_id=run_id), approved_by=user)


def settlement_run_execute(*, user, run_id: int):
    """Start executing an approved run through Stripe (a Celery task after the commit)."""
    from settlement.services import run_execute

    return run_execute(run=settlement_run_get(run_id=run_id), started_by=user)


def settlement_line_get(*, line_id: int):
    """One line by id (NotFound on "lineId" otherwise)."""
    from settlement.selectors import line_get

    return line_get(line_id=line_id)


def reconciliation_latest(*, run):
    """The run's latest comparison with Stripe, or None."""
    from settlement.selectors import reconciliation_latest as latest

    return latest(run=run)


def settlement_run_discard(*, user, run_id: int, reason: str = ""):
    """Throw a draft away: its transactions return to the pool."""
    from settlement.services import run_discard

    return run_discard(run=settlement_run_get(run_id=run_id), discarded_by=user, reason=reason)


def settlement_run_reconcile(*, user, run_id: int):
    """Compare the run with Stripe now; Stripe being unreachable is an INVALID_STATE error."""
    from coalition.errors import InvalidState
    from settlement.services import run_reconcile
    from settlement.stripe_gateway import GatewayError

    run = settlement_run_get(run_id=run_id)
    try:
        run_reconcile(run=run)
    except GatewayError as error:
        raise InvalidState(f"Stripe could not be asked: {error.message}") from error
    return run


def settlement_line_retry(*, user, line_id: int):
    """Try a failed line again through Stripe."""
    from settlement.services import line_retry

    return line_retry(line=settlement_line_get(line_id=line_id), user=user)


def settlement_line_carry_forward(*, user, line_id: int, reason: str = ""):
    """Move a failed line's amount to the counterparty's next run."""
    from settlement.services import line_carry_forward

    return line_carry_forward(line=settlement_line_get(line_id=line_id), user=user, reason=reason)

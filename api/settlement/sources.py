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

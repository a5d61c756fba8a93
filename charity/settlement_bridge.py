"""What settlement knows about a donation: whether a run claimed its ledger transactions,
and which run and Stripe transfer carried the money to the charity.

Settlement is a sibling app, so this module is the one place charity reads it. It asks
`settlement.selectors` when that offers `transactions_claimed(transaction_ids=…)` /
`transactions_disbursements(transaction_ids=…)`, and otherwise reads settlement's tables
directly (read-only): a `SettlementClaim` per settled ledger transaction (a discarded draft
deletes its claims), and the run's `SettlementLine` for the charity, which carries the
Stripe transfer id and when it was paid. A charity line that was carried forward (held, or
below the minimum) is followed to the run that took it in.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType

from django.apps import apps

# A carried-forward line is followed at most this many runs ahead.
MAX_CARRY_HOPS = 24


@dataclass(frozen=True)
class Disbursement:
    """The settlement run and Stripe transfer that pay (or paid) a donation to its charity.

    `transfer_id` and `paid_at` stay None until the transfer is made and reported paid.
    """

    run_id: int
    transfer_id: str | None
    paid_at: datetime | None

    @property
    def is_paid(self) -> bool:
        return self.paid_at is not None


def _settlement_selectors() -> ModuleType | None:
    try:
        return importlib.import_module("settlement.selectors")
    except ImportError:
        return None


def _settlement_model(name: str):
    try:
        return apps.get_model("settlement", name)
    except LookupError:
        return None


def _ids(transaction_ids: Iterable[int | None]) -> list[int]:
    return sorted({pk for pk in transaction_ids if pk is not None})


def transactions_claimed(*, transaction_ids: Iterable[int | None]) -> bool:
    """Has a settlement run claimed one of these ledger transactions (so the money is, or
    is being, paid to the charity)?"""
    ids = _ids(transaction_ids)
    if not ids:
        return False
    selectors = _settlement_selectors()
    claimed = getattr(selectors, "transactions_claimed", None)
    if claimed is not None:
        return bool(claimed(transaction_ids=ids))
    claim_model = _settlement_model("SettlementClaim")
    if claim_model is None:
        return False  # no settlement yet: nothing can have been disbursed
    return claim_model.objects.filter(transaction_id__in=ids).exists()


def transactions_disbursements(*, transaction_ids: Iterable[int | None]) -> dict[int, Disbursement]:
    """For each claimed transaction id: the run and transfer that carry it to its charity."""
    ids = _ids(transaction_ids)
    if not ids:
        return {}
    selectors = _settlement_selectors()
    offered = getattr(selectors, "transactions_disbursements", None)
    if offered is not None:
        return {
            pk: Disbursement(run_id=d.run_id, transfer_id=d.transfer_id, paid_at=d.paid_at)
            for pk, d in offered(transaction_ids=ids).items()
        }
    claim_model = _settlement_model("SettlementClaim")
    line_model = _settlement_model("SettlementLine")
    if claim_model is None or line_model is None:
        return {}
    claims = list(
        claim_model.objects.filter(transaction_id__in=ids).values_list(
            "transaction_id", "run_id", "transaction__charity_id"
        )
    )
    found: dict[int, Disbursement] = {}
    lines: dict[tuple[int, int], Disbursement | None] = {}
    for transaction_id, run_id, charity_id in claims:
        key = (run_id, charity_id)
        if key not in lines:
            lines[key] = _charity_line(line_model, run_id, charity_id)
        found[transaction_id] = lines[key] or Disbursement(
            run_id=run_id, transfer_id=None, paid_at=None
        )
    return found


def _charity_line(line_model, run_id: int, charity_id: int | None) -> Disbursement | None:
    """The charity's line of the run, following carried-forward lines to the run that paid."""
    if charity_id is None:
        return None
    for _hop in range(MAX_CARRY_HOPS):
        line = (
            line_model.objects.filter(run_id=run_id, charity_id=charity_id)
            .values("run_id", "stripe_object_id", "paid_at", "carried_to_run_id")
            .first()
        )
        if line is None:
            return None
        if line["carried_to_run_id"] and not line["stripe_object_id"]:
            run_id = line["carried_to_run_id"]
            continue
        return Disbursement(
            run_id=line["run_id"],
            transfer_id=line["stripe_object_id"] or None,
            paid_at=line["paid_at"],
        )
    return None

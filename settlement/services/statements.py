"""Statements: one CSV per counterparty and run, one row per priced component, and the
`settlement.statement_ready` partner webhook once a run's figures are approved."""

from __future__ import annotations

import csv
import io
import logging
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.urls import NoReverseMatch, reverse

from coalition.money import quantum

from ..models import SettlementLine, SettlementLineComponent, SettlementRun

logger = logging.getLogger(__name__)

Component = SettlementLineComponent.Kind
HEADER = [
    "run",
    "period_end",
    "counterparty",
    "row",
    "description",
    "points",
    "price",
    "amount",
    "currency",
]


def money_text(value: Decimal, currency: str) -> str:
    """An amount as finance reads it: the currency's decimals, more only when exact
    sub-cent figures need them (-3.675)."""
    rounded = value.quantize(quantum(currency))
    if rounded == value:
        return str(rounded)
    return format(value.normalize(), "f")


def _component_description(component: SettlementLineComponent) -> str:
    label = Component(component.kind).label
    if component.terms_id:
        since = f"{component.terms.valid_from:%Y-%m-%d %H:%M}"
        return f"{label} at {component.price} per point (terms from {since})"
    return f"{label} at {component.price} per point"


def statement_rows(*, line: SettlementLine) -> list[list[str]]:
    """The statement of one line. Amounts are signed for the counterparty: positive is owed to
    it, negative is owed by it; the rows add up to the net."""
    run = line.run
    who = f"{line.partner.code} {line.partner.name}" if line.partner_id else line.charity.name
    base = [str(run.pk), run.period_end.isoformat(), who]
    rows = [HEADER]
    components = line.components.select_related("terms").order_by("kind", "price", "id")
    for component in components:
        rows.append(
            base
            + [
                component.kind,
                _component_description(component),
                str(abs(component.points)),
                format(component.price.normalize(), "f"),
                money_text(component.amount, line.currency),
                line.currency,
            ]
        )
    rows.append(
        base
        + [
            "subtotal",
            "Exact value of the components",
            "",
            "",
            money_text(line.exact_amount, line.currency),
            line.currency,
        ]
    )
    rows.append(
        base
        + [
            "rounding",
            "Rounded once, half-even, to the minor unit",
            "",
            "",
            money_text(-line.rounding_remainder, line.currency),
            line.currency,
        ]
    )
    carried_from = ", ".join(
        f"#{run_id}"
        for run_id in SettlementLine.objects.filter(carried_to_run=run)
        .filter(partner_id=line.partner_id, charity_id=line.charity_id)
        .values_list("run_id", flat=True)
    )
    rows.append(
        base
        + [
            "carried_forward_in",
            f"Carried forward from earlier runs {carried_from}".strip(),
            "",
            "",
            money_text(line.carried_in_amount, line.currency),
            line.currency,
        ]
    )
    direction = SettlementLine.Direction(line.direction).label.lower()
    net = money_text(line.net_amount, line.currency)
    rows.append(base + ["net", f"Net: {direction}", "", "", net, line.currency])
    carried_out = line.net_amount if line.status == SettlementLine.Status.CARRIED_FORWARD else 0
    rows.append(
        base
        + [
            "carried_forward_out",
            line.hold_reason or "Carried forward to the next run",
            "",
            "",
            money_text(Decimal(carried_out), line.currency),
            line.currency,
        ]
    )
    return rows


def statement_csv(*, line: SettlementLine) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(statement_rows(line=line))
    return buffer.getvalue()


def run_lines_csv(*, run: SettlementRun) -> str:
    """Every line of a run, one row each (the finance export)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "run", "line", "counterparty_type", "counterparty", "issued_points",
            "redeemed_points", "matched_points", "donated_points", "issuance_amount",
            "redemption_amount", "match_amount", "donation_amount", "exact_amount",
            "rounded_amount", "carried_in", "net_amount", "currency", "direction", "status",
            "stripe_object_id", "failure_reason",
        ]
    )  # fmt: skip
    for line in run.lines.select_related("partner", "charity").order_by("id"):
        writer.writerow(
            [
                run.pk, line.pk, "partner" if line.partner_id else "charity",
                line.partner.code if line.partner_id else line.charity.name,
                line.issued_points, line.redeemed_points, line.matched_points,
                line.donated_points, line.issuance_amount, line.redemption_amount,
                line.match_amount, line.donation_amount, line.exact_amount,
                line.rounded_amount, line.carried_in_amount, line.net_amount, line.currency,
                line.direction, line.status, line.stripe_object_id, line.failure_reason,
            ]
        )  # fmt: skip
    return buffer.getvalue()


def statement_path(*, run_id: int, partner_id: int) -> str:
    try:
        return reverse(
            "settlement-partner-statement", kwargs={"run_id": run_id, "partner_id": partner_id}
        )
    except NoReverseMatch:
        return f"/settlement/runs/{run_id}/statements/partner/{partner_id}.csv"


def statements_announce(*, run_id: int) -> int:
    """Tell each partner of an approved run that its statement is ready (partner webhook
    `settlement.statement_ready`, once per run and partner). Returns how many were sent."""
    try:
        from partners.models import WebhookEvent
        from partners.webhooks import EventType, event_record, global_id
    except ImportError:  # pragma: no cover - partner webhooks not installed
        return 0
    announced = 0
    lines = SettlementLine.objects.filter(run_id=run_id, partner__isnull=False).select_related(
        "partner", "run"
    )
    for line in lines.order_by("partner_id"):
        dedup_key = f"settlement.statement_ready:{line.run_id}:{line.partner_id}"
        if WebhookEvent.objects.filter(partner=line.partner, dedup_key=dedup_key).exists():
            continue
        try:
            with transaction.atomic():
                event = event_record(
                    partner=line.partner,
                    type=EventType.SETTLEMENT_STATEMENT_READY,
                    payload=lambda line=line: _announcement(line, global_id),
                    dedup_key=dedup_key,
                )
        except IntegrityError:  # announced concurrently
            continue
        announced += event is not None
    return announced


def _announcement(line: SettlementLine, global_id) -> dict:
    return {
        "runId": global_id("SettlementRun", line.run_id),
        "periodEnd": line.run.period_end.isoformat(),
        "netAmount": {
            "amount": money_text(line.net_amount, line.currency),
            "currency": line.currency,
        },
        "direction": line.direction.upper(),
        "statementUrl": statement_path(run_id=line.run_id, partner_id=line.partner_id),
    }

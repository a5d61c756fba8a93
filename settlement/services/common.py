"""Shared by the settlement services: who is acting, the transition log, settings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from ..errors import PermissionDenied
from ..models import SettlementLine, SettlementRun, SettlementTransition

SYSTEM_EXECUTION = "system:execution"
SYSTEM_RECONCILIATION = "system:reconciliation"


def actor_label(user: Any) -> str:
    return f"staff:{user.pk}"


# The API's finance permissions (api/models.py), checked here too: the dashboard and the
# admin call these services with the logged-in user, and staff status alone is not enough.
MANAGE_SETTLEMENT = "api.manage_settlement"
APPROVE_SETTLEMENT = "api.approve_settlement"


def require_staff(user: Any, *, action: str, permission: str = MANAGE_SETTLEMENT) -> None:
    """Only an active staff user holding `permission` may act on settlement."""
    if user is None or not getattr(user, "is_staff", False) or not user.is_active:
        raise PermissionDenied(f"Only finance staff may {action}", field="user")
    if not user.has_perm(permission):
        raise PermissionDenied(
            f"Only finance staff with the {permission} permission may {action}", field="user"
        )


def record_transition(
    *,
    run: SettlementRun,
    to_status: str,
    from_status: str = "",
    line: SettlementLine | None = None,
    user: Any = None,
    label: str | None = None,
    note: str = "",
) -> SettlementTransition:
    """Log one state change of a run or line: who (a staff user or the system) and when.

    A change made by a staff user (create, approve, discard, execute, retry, carry forward,
    …) also lands in the audit trail (issue 9), in the same database transaction, with the
    status before and after; the system's own moves (Stripe answers, webhooks) are in the
    transition log only."""
    if user is not None:
        _audit_transition(
            run=run, line=line, from_status=from_status, to_status=to_status, user=user, note=note
        )
    return SettlementTransition.objects.create(
        run=run,
        line=line,
        from_status=from_status,
        to_status=to_status,
        actor=user,
        actor_label=label or (actor_label(user) if user is not None else "system"),
        note=note[:2000],
        created_at=timezone.now(),
    )


def partner_minimum() -> Decimal:
    return Decimal(str(settings.SETTLEMENT_MINIMUM))


def charity_minimum() -> Decimal:
    return Decimal(str(getattr(settings, "SETTLEMENT_CHARITY_MINIMUM", partner_minimum())))


def _audit_transition(
    *,
    run: SettlementRun,
    line: SettlementLine | None,
    from_status: str,
    to_status: str,
    user: Any,
    note: str,
) -> None:
    from coalition.audit import audit_record

    subject = line if line is not None else run
    kind = "line" if line is not None else "run"
    after: dict[str, Any] = {"status": to_status}
    if note:
        after["note"] = note[:2000]
    if line is not None:
        after |= {
            "run": run.pk,
            "counterparty": line.counterparty_label,
            "netAmount": str(line.net_amount),
            "currency": line.currency,
            "attempt": line.attempt,
        }
    else:
        after |= {"periodEnd": run.period_end.isoformat() if run.period_end else None}
    audit_record(
        actor=user,
        action=f"settlement.{kind}.{to_status}",
        object_type=subject._meta.label_lower,
        object_id=subject.pk,
        before={"status": from_status} if from_status else None,
        after=after,
    )

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


def require_staff(user: Any, *, action: str) -> None:
    """Only an active staff user may act on settlement."""
    if user is None or not getattr(user, "is_staff", False) or not user.is_active:
        raise PermissionDenied(f"Only finance staff may {action}", field="user")


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
    """Log one state change of a run or line: who (a staff user or the system) and when."""
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

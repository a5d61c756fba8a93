"""Matching campaigns: a partner sponsors matches for a charity or a whole cause."""

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from coalition import services as ledger

from ..errors import InvalidInput, InvalidState
from ..models import Charity, MatchingCampaign
from .charities import cause_normalize


def _ratio(value: Any) -> Decimal:
    try:
        ratio = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise InvalidInput(
            "The ratio must be a decimal number, e.g. 1 or 2", field="ratio"
        ) from exc
    if not ratio.is_finite() or ratio <= 0 or ratio >= Decimal("10000"):
        raise InvalidInput("The ratio must be above 0 and below 10,000", field="ratio")
    if ratio.as_tuple().exponent < -4:
        raise InvalidInput("The ratio has at most 4 decimal places", field="ratio")
    return ratio


def _positive(value: Any, *, field: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput("Must be a whole number of points above 0", field=field)
    return value


def campaign_create(
    *,
    sponsor: Any,
    name: Any,
    starts_at: datetime,
    ends_at: datetime,
    ratio: Any,
    cap_points: Any,
    charity: Charity | None = None,
    cause: Any = None,
    per_member_cap_points: Any = None,
) -> MatchingCampaign:
    """A sponsor matches donations to one charity, or to every charity of a cause, within
    [starts_at, ends_at), `ratio` matching points per donated point, up to `cap_points`
    (and `per_member_cap_points` for one member)."""
    name = ledger.validate_text(name, field="name", required=True).strip()
    if sponsor is None or getattr(sponsor, "status", "active") != "active":
        raise InvalidState("The sponsor must be an active partner", field="sponsor")
    if (charity is None) == (cause in (None, "")):
        raise InvalidInput("Choose either a charity or a cause", field="charity")
    cause_code = cause_normalize(cause) if charity is None else ""
    if starts_at is None or ends_at is None or ends_at <= starts_at:
        raise InvalidInput("The campaign must end after it starts", field="endsAt")
    return MatchingCampaign.objects.create(
        sponsor=sponsor,
        name=name,
        charity=charity,
        cause=cause_code,
        starts_at=starts_at,
        ends_at=ends_at,
        ratio=_ratio(ratio),
        cap_points=_positive(cap_points, field="capPoints"),
        per_member_cap_points=_positive(
            per_member_cap_points, field="perMemberCapPoints", optional=True
        ),
    )

"""Settlement's errors are the programme's: every failure a caller can cause carries a code
from the API contract (INVALID_STATE for an illegal transition, PERMISSION_DENIED for
segregation of duties, NOT_FOUND, CURRENCY_MISMATCH)."""

from coalition.errors import (
    CoalitionError,
    CurrencyMismatch,
    InvalidInput,
    InvalidState,
    NotFound,
    PermissionDenied,
)

__all__ = [
    "CoalitionError",
    "CurrencyMismatch",
    "InvalidInput",
    "InvalidState",
    "NotFound",
    "PermissionDenied",
]

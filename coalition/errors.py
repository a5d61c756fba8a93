"""Domain errors. Every failure a caller can cause has a code from the API contract.

Services raise these; the API turns them into `errors { field code message }`, management
commands into one line on standard error.
"""

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID = "INVALID"
    NOT_FOUND = "NOT_FOUND"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INSUFFICIENT_POINTS = "INSUFFICIENT_POINTS"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    MEMBER_NOT_ACTIVE = "MEMBER_NOT_ACTIVE"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    ALREADY_REVERSED = "ALREADY_REVERSED"
    HOLD_NOT_ACTIVE = "HOLD_NOT_ACTIVE"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    INVALID_STATE = "INVALID_STATE"


class CoalitionError(Exception):
    """A business rule refused the request. Nothing was written."""

    code: ErrorCode = ErrorCode.INVALID

    def __init__(self, message: str, *, field: str | None = None, code: ErrorCode | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" + (f" ({self.field})" if self.field else "")


class InvalidInput(CoalitionError):
    code = ErrorCode.INVALID


class NotFound(CoalitionError):
    code = ErrorCode.NOT_FOUND


class PermissionDenied(CoalitionError):
    code = ErrorCode.PERMISSION_DENIED


class InsufficientPoints(CoalitionError):
    code = ErrorCode.INSUFFICIENT_POINTS


class IdempotencyConflict(CoalitionError):
    code = ErrorCode.IDEMPOTENCY_CONFLICT


class MemberNotActive(CoalitionError):
    code = ErrorCode.MEMBER_NOT_ACTIVE


class CurrencyMismatch(CoalitionError):
    code = ErrorCode.CURRENCY_MISMATCH


class AlreadyReversed(CoalitionError):
    code = ErrorCode.ALREADY_REVERSED


class HoldNotActive(CoalitionError):
    code = ErrorCode.HOLD_NOT_ACTIVE


class LimitExceeded(CoalitionError):
    code = ErrorCode.LIMIT_EXCEEDED


class InvalidState(CoalitionError):
    code = ErrorCode.INVALID_STATE

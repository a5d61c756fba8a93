"""Charity errors are the coalition's: one set of contract codes for every app.

Services raise these; the API turns them into `errors { field code message }`, management
commands into one line on standard error.
"""

from coalition.errors import (
    AlreadyReversed,
    CoalitionError,
    ErrorCode,
    IdempotencyConflict,
    InsufficientPoints,
    InvalidInput,
    InvalidState,
    LimitExceeded,
    MemberNotActive,
    NotFound,
)

__all__ = [
    "AlreadyReversed",
    "CoalitionError",
    "ErrorCode",
    "IdempotencyConflict",
    "InsufficientPoints",
    "InvalidInput",
    "InvalidState",
    "LimitExceeded",
    "MemberNotActive",
    "NotFound",
]

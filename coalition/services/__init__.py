"""Writes to the programme and its points ledger.

Every service validates its input, locks only the member wallets it moves (in member-id
order), writes one balanced transaction, and raises a `CoalitionError` with a contract code
when a rule refuses the request, in which case nothing is written.

Wallet balances are maintained by the database from the entries themselves (a trigger, see
coalition/sql/); the services maintain `held` (points reserved by holds), lots and activity.
"""

from ..errors import (
    AlreadyReversed,
    CoalitionError,
    HoldNotActive,
    IdempotencyConflict,
    InsufficientPoints,
    InvalidInput,
    InvalidState,
    LimitExceeded,
    MemberNotActive,
    NotFound,
)
from .adjustments import points_adjust
from .expiry import points_expire_due
from .holds import hold_authorize, hold_capture, hold_void, holds_expire_due
from .idempotency import (
    idempotency_key_used,
    idempotency_record,
    idempotency_replay,
    ledger_write,
    request_fingerprint,
    transaction_replay,
)
from .members import (
    luhn_check_digit,
    luhn_valid,
    member_authenticate,
    member_create,
    member_set_password,
    member_set_status,
)
from .points import points_burn, points_donate, points_earn
from .posting import (
    add_months,
    lot_expiry,
    programme_get,
    system_account_id,
    validate_idempotency_key,
    validate_points,
    validate_text,
    wallets_lock,
)
from .reversals import reversible_points, split_largest_remainder, transaction_reverse
from .tiers import member_tier, member_tier_upgrade, qualifying_points, tiers_recalculate

__all__ = [
    "AlreadyReversed",
    "CoalitionError",
    "HoldNotActive",
    "IdempotencyConflict",
    "InsufficientPoints",
    "InvalidInput",
    "InvalidState",
    "LimitExceeded",
    "MemberNotActive",
    "NotFound",
    "add_months",
    "hold_authorize",
    "hold_capture",
    "hold_void",
    "holds_expire_due",
    "idempotency_record",
    "idempotency_key_used",
    "idempotency_replay",
    "ledger_write",
    "lot_expiry",
    "luhn_check_digit",
    "member_tier",
    "member_tier_upgrade",
    "qualifying_points",
    "tiers_recalculate",
    "luhn_valid",
    "member_authenticate",
    "member_create",
    "member_set_password",
    "member_set_status",
    "points_adjust",
    "points_burn",
    "points_donate",
    "points_earn",
    "points_expire_due",
    "programme_get",
    "request_fingerprint",
    "reversible_points",
    "split_largest_remainder",
    "system_account_id",
    "transaction_replay",
    "transaction_reverse",
    "validate_idempotency_key",
    "validate_points",
    "validate_text",
    "wallets_lock",
]

# Sponsor matches (charity campaigns, issue 6): the ledger part of a partner's match.
from .matching import points_match, points_match_reverse  # noqa: E402

__all__ += ["points_match", "points_match_reverse"]

# Set-based posting (issue 8, "Scale"): many earns at one partner in one transaction.
from .batch import BatchOutcome, EarnRequest, OutcomeStatus, points_earn_batch  # noqa: E402

__all__ += ["BatchOutcome", "EarnRequest", "OutcomeStatus", "points_earn_batch"]

# Members' personal data (issue 9): export everything held, erase (anonymise) the person.
from .privacy import member_erase, member_export  # noqa: E402

__all__ += ["member_erase", "member_export"]

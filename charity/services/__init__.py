"""Writes for charities: onboarding and verification, donations and refunds, matching
campaigns, automatic giving. Every service validates, locks what it must (the member's
wallet first), writes, and raises a coalition error with a contract code when a rule
refuses, in which case nothing is written."""

from .campaigns import campaign_create
from .charities import (
    DEFAULT_CAUSES,
    STATUS_TRANSITIONS,
    cause_normalize,
    causes_seed,
    charity_create,
    charity_fields_validate,
    charity_set_status,
    charity_update,
)
from .donations import (
    donation_create,
    donation_for_transaction,
    donation_refund,
    receipt_number_next,
    require_donatable,
)
from .giving import expiring_points_donate, giving_preferences_update, round_up_donate

__all__ = [
    "DEFAULT_CAUSES",
    "STATUS_TRANSITIONS",
    "campaign_create",
    "cause_normalize",
    "causes_seed",
    "charity_create",
    "charity_fields_validate",
    "charity_set_status",
    "charity_update",
    "donation_create",
    "donation_for_transaction",
    "donation_refund",
    "expiring_points_donate",
    "giving_preferences_update",
    "receipt_number_next",
    "require_donatable",
    "round_up_donate",
]

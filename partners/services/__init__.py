"""Writes for partners: onboarding, the earn rule engine, redemption, rewards, enrolment."""

from .accounts import (
    API_KEY_PREFIX,
    api_key_create,
    api_key_digest,
    api_key_revoke,
    partner_create,
    partner_get_by_code,
    partner_set_status,
    require_active_partner,
    store_create,
    terms_set,
)
from .earning import PurchaseResult, compute_points, eligible_amount, purchase_record
from .members import Enrolment, birthday_bonuses_grant, identity_link, member_enroll
from .redemption import (
    Redemption,
    partner_transaction_reverse,
    points_redeem,
    redemption_authorize,
    redemption_capture,
    redemption_discount,
    redemption_void,
    reward_redeem,
)

__all__ = [
    "API_KEY_PREFIX",
    "Enrolment",
    "PurchaseResult",
    "Redemption",
    "api_key_create",
    "api_key_digest",
    "api_key_revoke",
    "birthday_bonuses_grant",
    "compute_points",
    "eligible_amount",
    "identity_link",
    "member_enroll",
    "partner_create",
    "partner_get_by_code",
    "partner_set_status",
    "partner_transaction_reverse",
    "points_redeem",
    "purchase_record",
    "redemption_authorize",
    "redemption_capture",
    "redemption_discount",
    "redemption_void",
    "require_active_partner",
    "reward_redeem",
    "store_create",
    "terms_set",
]

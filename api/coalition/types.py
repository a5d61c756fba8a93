"""The programme's members, their points and holds as the API shows them.

Which rows a caller sees is decided by coalition.selectors for the caller's `Viewer`: a member
sees itself; a partner sees a member it looked up by number and, of the member's history,
only the transactions at its own tills; staff see everything.
"""

from __future__ import annotations

from decimal import Decimal as PyDecimal
from types import SimpleNamespace

import graphene

from coalition.models import LedgerTransaction
from coalition.models import Member as MemberModel
from coalition.models import RedemptionHold as HoldModel
from coalition.money import round_money
from coalition.selectors import Viewer

from ..charity.types import Charity, DonationConnection
from ..core.auth import principal_of
from ..core.connections import (
    CountableConnection,
    connection_field,
    connection_from_page,
    keyset_page,
)
from ..core.dataloaders import loaders_for
from ..core.errors import api_error
from ..core.scalars import DateTime, Decimal
from ..core.types import Money, choice_value
from ..partners.types import Partner

HISTORY_ORDER = ("-created_at", "-id")


def viewer_of(info, root) -> Viewer:
    """The viewer rows are filtered for: the caller's, unless the object was handed out to
    a specific viewer (memberLogin shows the member to itself before it holds a token)."""
    return getattr(root, "coalition_viewer", None) or principal_of(info).viewer


MemberStatus = graphene.Enum(
    "MemberStatus",
    [("ACTIVE", "active"), ("SUSPENDED", "suspended"), ("CLOSED", "closed")],
)

TransactionKind = graphene.Enum(
    "TransactionKind",
    [
        ("EARN", "earn"),
        ("BONUS", "bonus"),
        ("BURN", "burn"),
        ("DONATE", "donate"),
        ("EXPIRE", "expire"),
        ("REVERSAL", "reversal"),
        ("ADJUSTMENT", "adjustment"),
        ("MATCH", "match"),
    ],
    description="EARN and BONUS credit the member, BURN (redemption), DONATE and EXPIRE debit "
    "it, REVERSAL undoes (part of) another, ADJUSTMENT is an operator correction, MATCH is a "
    "sponsor's match of a donation.",
)

HoldStatus = graphene.Enum(
    "HoldStatus",
    [("ACTIVE", "active"), ("CAPTURED", "captured"), ("VOIDED", "voided"), ("EXPIRED", "expired")],
)


class Tier(graphene.ObjectType):
    code = graphene.String(required=True)
    name = graphene.String(required=True)
    earn_multiplier = Decimal(required=True)
    qualifying_points = graphene.Int(required=True)


# The programme without tiers: everyone is in this base tier.
BASE_TIER = SimpleNamespace(
    code="BASE", name="Base", earn_multiplier=PyDecimal("1"), qualifying_points=0
)


class ExpiringPoints(graphene.ObjectType):
    points = graphene.Int(required=True)
    expires_at = DateTime(required=True)


class PointsComponent(graphene.ObjectType):
    """One part of a transaction's points: base rate, tier, a promotion, a bonus."""

    kind = graphene.String(required=True, description="base, tier, promotion or bonus")
    label = graphene.String(required=True)
    points = graphene.Int(required=True)
    funded_by = graphene.String(required=True, description="partner or operator")
    multiplier = Decimal()

    # Components are stored as the engine wrote them (metadata["breakdown"], camelCase).
    @staticmethod
    def resolve_kind(root, info):
        return str(root.get("kind") or "")

    @staticmethod
    def resolve_label(root, info):
        return str(root.get("label") or "")

    @staticmethod
    def resolve_points(root, info):
        return int(root.get("points") or 0)

    @staticmethod
    def resolve_funded_by(root, info):
        return str(root.get("fundedBy") or "")

    @staticmethod
    def resolve_multiplier(root, info):
        value = root.get("multiplier")
        return PyDecimal(value) if value not in (None, "") else None


class PointsTransaction(graphene.ObjectType):
    """One change of a member's points, as the member sees it."""

    class Meta:
        interfaces = (graphene.relay.Node,)

    kind = graphene.Field(TransactionKind, required=True)
    points = graphene.Int(required=True, description="Signed: +earn, -burn.")
    partner = graphene.Field(Partner)
    charity = graphene.Field(Charity)
    reference = graphene.String(description="The partner's receipt or order id.")
    purchase_amount = graphene.Field(Money)
    created_at = DateTime(required=True)
    reversal_of = graphene.Field(lambda: PointsTransaction)
    breakdown = graphene.List(
        graphene.NonNull(PointsComponent),
        required=True,
        description="How the points of an earn or bonus were computed (empty otherwise).",
    )

    @classmethod
    def is_type_of(cls, root, info):
        return isinstance(root, LedgerTransaction)

    @classmethod
    def get_node(cls, info, pk):
        from coalition.selectors import transactions_visible

        return transactions_visible(viewer=principal_of(info).viewer).filter(pk=pk).first()

    @staticmethod
    def resolve_kind(root, info):
        return choice_value(root.kind)

    @staticmethod
    def resolve_points(root, info):
        return root.member_points

    @staticmethod
    def resolve_partner(root, info):
        return loaders_for(info).partners().load(root.partner_id)

    @staticmethod
    def resolve_charity(root, info):
        return loaders_for(info).charities().load(root.charity_id)

    @staticmethod
    def resolve_reference(root, info):
        return root.reference or None

    @staticmethod
    def resolve_purchase_amount(root, info):
        if root.purchase_amount is None:
            return None
        # The same digits whether the row was just written or read back (a replay).
        amount = round_money(PyDecimal(root.purchase_amount), root.purchase_currency)
        return Money.of(amount, root.purchase_currency)

    @staticmethod
    def resolve_reversal_of(root, info):
        if root.reversal_of_id is None:
            return None
        viewer = viewer_of(info, root)
        original = loaders_for(info).transactions(viewer).load(root.reversal_of_id)
        if original is not None:
            original.coalition_viewer = getattr(root, "coalition_viewer", None)
        return original

    @staticmethod
    def resolve_breakdown(root, info):
        components = (root.metadata or {}).get("breakdown") or []
        return [component for component in components if isinstance(component, dict)]


class PointsTransactionConnection(CountableConnection):
    class Meta:
        node = PointsTransaction
        strict_types = True


class RedemptionHold(graphene.ObjectType):
    """Points reserved at a till until captured, voided or expired."""

    class Meta:
        interfaces = (graphene.relay.Node,)

    points = graphene.Int(required=True)
    status = graphene.Field(HoldStatus, required=True)
    expires_at = DateTime(required=True)
    captured_points = graphene.Int(required=True)
    reference = graphene.String()

    @classmethod
    def is_type_of(cls, root, info):
        return isinstance(root, HoldModel)

    @classmethod
    def get_node(cls, info, pk):
        from coalition.selectors import holds_visible

        return holds_visible(viewer=principal_of(info).viewer).filter(pk=pk).first()

    @staticmethod
    def resolve_status(root, info):
        return choice_value(root.status)

    @staticmethod
    def resolve_reference(root, info):
        return root.reference or None


class Member(graphene.ObjectType):
    """A member of the programme. Partners reach one by member number; members see
    themselves (`me`)."""

    class Meta:
        interfaces = (graphene.relay.Node,)

    member_number = graphene.String(required=True)
    display_name = graphene.String(required=True)
    status = graphene.Field(MemberStatus, required=True)
    balance = graphene.Int(required=True, description="Points spendable now.")
    held_points = graphene.Int(required=True, description="Reserved by active holds.")
    wallet_balance = graphene.Int(
        required=True,
        description="The wallet's points, holds included; negative when a refund took back "
        "points already spent (nothing can be spent until it is repaid).",
    )
    tier = graphene.Field(Tier, required=True)
    lifetime_earned = graphene.Int(required=True)
    transactions = connection_field(
        PointsTransactionConnection,
        description="Newest first. A partner sees only the transactions at its own tills.",
    )
    expiring_points = graphene.List(
        graphene.NonNull(ExpiringPoints),
        required=True,
        within_days=graphene.Int(default_value=30),
    )
    donations = connection_field(
        DonationConnection, description="Newest first; only the member (and staff) see them."
    )

    @classmethod
    def is_type_of(cls, root, info):
        return isinstance(root, MemberModel)

    @classmethod
    def get_node(cls, info, pk):
        from coalition.selectors import members_visible_by_id

        return members_visible_by_id(viewer=principal_of(info).viewer).filter(pk=pk).first()

    @staticmethod
    def resolve_status(root, info):
        return choice_value(root.status)

    @staticmethod
    def _wallet(root, info):
        return loaders_for(info).wallets().load(root.pk)

    @staticmethod
    def resolve_balance(root, info):
        wallet = Member._wallet(root, info)
        return max(wallet.balance - wallet.held, 0)

    @staticmethod
    def resolve_held_points(root, info):
        return Member._wallet(root, info).held

    @staticmethod
    def resolve_wallet_balance(root, info):
        return Member._wallet(root, info).balance

    @staticmethod
    def resolve_tier(root, info):
        from coalition.services import member_tier

        return member_tier(member=root) or BASE_TIER

    @staticmethod
    def resolve_lifetime_earned(root, info):
        from coalition.selectors import member_lifetime_earned

        return member_lifetime_earned(member=root)

    @staticmethod
    def resolve_transactions(root, info, first=None, after=None):
        from coalition.selectors import member_transactions_visible

        viewer = viewer_of(info, root)
        history = member_transactions_visible(member=root, viewer=viewer)
        page = keyset_page(history, ordering=HISTORY_ORDER, first=first, after=after)
        loaders = loaders_for(info)
        loaders.partners().expect(row.partner_id for row in page.rows)
        loaders.charities().expect(row.charity_id for row in page.rows)
        originals = loaders.transactions(viewer)
        for row in page.rows:
            row.coalition_viewer = getattr(root, "coalition_viewer", None)
            originals.prime(row.pk, row)
        originals.expect(row.reversal_of_id for row in page.rows)
        return connection_from_page(PointsTransactionConnection, page)

    @staticmethod
    def resolve_expiring_points(root, info, within_days=30):
        from coalition.errors import CoalitionError
        from coalition.selectors import member_expiring_points

        try:
            return member_expiring_points(member=root, within_days=within_days)
        except CoalitionError as error:
            raise api_error(error) from error

    @staticmethod
    def resolve_donations(root, info, first=None, after=None):
        from charity.selectors import member_donations
        from coalition.selectors import member_private_visible

        donations = member_donations(member=root)
        if not member_private_visible(member=root, viewer=viewer_of(info, root)):
            donations = donations.none()  # e.g. a partner: never what a member gave
        page = keyset_page(donations, ordering=HISTORY_ORDER, first=first, after=after)
        loaders_for(info).charities().expect(row.charity_id for row in page.rows)
        return connection_from_page(DonationConnection, page)

"""Partner mutations: what a till, an e-shop or a partner's app does with its API key.

Each resolves ids, calls one partners service and returns what it wrote; the service
validates, locks, writes, replays a retried idempotency key, and raises the contract codes.
"""

from __future__ import annotations

import graphene

from ..coalition.types import Member, PointsTransaction, RedemptionHold
from ..core.errors import Error, input_path
from ..core.mutations import BaseMutation, Payload, decode_id
from ..core.permissions import PartnerKey, Permission
from ..core.scalars import DateTime, Decimal
from ..core.types import Money
from .types import WebhookEndpoint

EARN = PartnerKey("earn")
BURN = PartnerKey("burn")

# ---------------------------------------------------------------------------- enrolment


class EnrollMemberInput(graphene.InputObjectType):
    email = graphene.String(required=True)
    display_name = graphene.String(required=True)
    password = graphene.String(description="At least 8 characters; lets the member log in.")
    birth_date = graphene.String(description="YYYY-MM-DD")
    referral_code = graphene.String(description="Another member's referral code.")
    idempotency_key = graphene.String(required=True)


class EnrollMemberPayload(Payload):
    member = graphene.Field(Member)


class EnrollMember(BaseMutation):
    """Enrol a new member (earn scope): a member number, and the welcome bonus if any."""

    class Arguments:
        input = EnrollMemberInput(required=True)

    class Meta:
        output = EnrollMemberPayload

    permission = EARN

    @classmethod
    def perform(cls, info, principal, input):
        from partners.services import member_enroll

        enrolment = member_enroll(
            partner=principal.partner,
            idempotency_key=input.idempotency_key,
            email=input.email,
            display_name=input.display_name,
            password=input.password,
            birth_date=input.birth_date,
            referral_code=input.referral_code,
        )
        return EnrollMemberPayload(member=enrolment.member, errors=[])


# ---------------------------------------------------------------------------- earning


class LineItemInput(graphene.InputObjectType):
    sku = graphene.String(required=True)
    category = graphene.String()
    quantity = graphene.Int(required=True)
    unit_price = Decimal(required=True)


class RecordPurchaseInput(graphene.InputObjectType):
    member_number = graphene.String(required=True)
    amount = Decimal(required=True)
    currency = graphene.String(required=True)
    reference = graphene.String(required=True, description="Your receipt or order id.")
    idempotency_key = graphene.String(required=True)
    store_code = graphene.String()
    line_items = graphene.List(
        graphene.NonNull(LineItemInput),
        description="When sent, they must add up to the amount; excluded categories earn nothing.",
    )
    occurred_at = DateTime(description="When the purchase happened (default: now).")


def _purchase_fields(input) -> dict:
    """A RecordPurchaseInput as the keyword arguments of the purchase services."""
    line_items = None
    if input.line_items is not None:
        line_items = [
            {
                "sku": item.sku,
                "category": item.category,
                "quantity": item.quantity,
                "unit_price": item.unit_price,
            }
            for item in input.line_items
        ]
    return {
        "idempotency_key": input.idempotency_key,
        "amount": input.amount,
        "currency": input.currency,
        "reference": input.reference,
        "member_number": input.member_number,
        "store_code": input.store_code,
        "line_items": line_items,
        "occurred_at": input.occurred_at,
    }


class RecordPurchasePayload(Payload):
    transaction = graphene.Field(PointsTransaction, description="Null when nothing was earned.")
    points_awarded = graphene.Int(required=True)
    member = graphene.Field(Member)

    @staticmethod
    def resolve_points_awarded(root, info):
        return root.points_awarded or 0


class RecordPurchase(BaseMutation):
    """Record a purchase (earn scope): the programme's rules compute the points."""

    class Arguments:
        input = RecordPurchaseInput(required=True)

    class Meta:
        output = RecordPurchasePayload

    permission = EARN

    @classmethod
    def perform(cls, info, principal, input):
        from partners.services import purchase_record

        result = purchase_record(partner=principal.partner, **_purchase_fields(input))
        return RecordPurchasePayload(
            transaction=result.transaction,
            points_awarded=result.points_awarded,
            member=result.member,
            errors=[],
        )


# ---------------------------------------------------------------------------- redemption


class RedeemPointsInput(graphene.InputObjectType):
    member_number = graphene.String(required=True)
    points = graphene.Int(required=True)
    reference = graphene.String(required=True)
    idempotency_key = graphene.String(required=True)


def _at_till(action, principal, input):
    """Let the service act for the partner on the member's points at the till."""
    return action(
        partner=principal.partner,
        idempotency_key=input.idempotency_key,
        member_number=input.member_number,
        points=input.points,
        reference=input.reference,
    )


def _on_hold(action, principal, input, **extra):
    """Resolve the hold's id, let the service act for the partner on it."""
    return action(
        partner=principal.partner,
        idempotency_key=input.idempotency_key,
        hold_id=decode_id(input.hold_id, "RedemptionHold", field="holdId"),
        **extra,
    )


class RedeemPointsPayload(Payload):
    transaction = graphene.Field(PointsTransaction)
    discount = graphene.Field(Money, description="What the points are worth at your till.")
    member = graphene.Field(Member)


def _redeemed(redemption) -> RedeemPointsPayload:
    return RedeemPointsPayload(
        transaction=redemption.transaction,
        discount=redemption.discount,
        member=redemption.transaction.member,
        errors=[],
    )


class RedeemPoints(BaseMutation):
    """Redeem points at the till in one step (burn scope)."""

    class Arguments:
        input = RedeemPointsInput(required=True)

    class Meta:
        output = RedeemPointsPayload

    permission = BURN

    @classmethod
    def perform(cls, info, principal, input):
        from partners.services import points_redeem

        return _redeemed(_at_till(points_redeem, principal, input))


# The same fields as RedeemPointsInput (graphene copies them); no docstring: it would
# become the type's description in the schema.
class AuthorizeRedemptionInput(RedeemPointsInput):
    pass


class CaptureRedemptionInput(graphene.InputObjectType):
    hold_id = graphene.ID(required=True)
    points = graphene.Int(description="Capture less than held; the rest is released.")
    idempotency_key = graphene.String(required=True)


class VoidRedemptionInput(graphene.InputObjectType):
    hold_id = graphene.ID(required=True)
    idempotency_key = graphene.String(required=True)


class RedemptionHoldPayload(Payload):
    hold = graphene.Field(RedemptionHold)
    member = graphene.Field(Member)


def _hold_payload(hold) -> RedemptionHoldPayload:
    return RedemptionHoldPayload(hold=hold, member=hold.member, errors=[])


class AuthorizeRedemption(BaseMutation):
    """Reserve points at the till (burn scope); capture or void follows, or it expires."""

    class Arguments:
        input = AuthorizeRedemptionInput(required=True)

    class Meta:
        output = RedemptionHoldPayload

    permission = BURN

    @classmethod
    def perform(cls, info, principal, input):
        from partners.services import redemption_authorize

        return _hold_payload(_at_till(redemption_authorize, principal, input))


class CaptureRedemption(BaseMutation):
    """Burn all or part of one of your holds (burn scope)."""

    class Arguments:
        input = CaptureRedemptionInput(required=True)

    class Meta:
        output = RedeemPointsPayload

    permission = BURN

    @classmethod
    def perform(cls, info, principal, input):
        from partners.services import redemption_capture

        return _redeemed(_on_hold(redemption_capture, principal, input, points=input.points))


class VoidRedemption(BaseMutation):
    """Release one of your holds without burning (burn scope)."""

    class Arguments:
        input = VoidRedemptionInput(required=True)

    class Meta:
        output = RedemptionHoldPayload

    permission = BURN

    @classmethod
    def perform(cls, info, principal, input):
        from partners.services import redemption_void

        return _hold_payload(_on_hold(redemption_void, principal, input))


# ---------------------------------------------------------------------------- reversal


class ReverseTransactionInput(graphene.InputObjectType):
    transaction_id = graphene.ID(required=True)
    points = graphene.Int(description="Reverse only this many points (default: all left).")
    reason = graphene.String()
    idempotency_key = graphene.String(required=True)


class ReverseTransactionPayload(Payload):
    transaction = graphene.Field(PointsTransaction, description="The reversal.")
    member = graphene.Field(Member)


class ScopeOfOriginal(Permission):
    """Reversing needs the scope that made the original: earn for an earn or bonus, burn
    for a redemption."""

    SCOPES = {"earn": "earn", "bonus": "earn", "burn": "burn"}
    description = "the scope of the original transaction (earn or burn)"

    def allows_for(self, principal, original) -> bool:
        scope = self.SCOPES.get(original.kind)
        return scope is None or scope in principal.scopes

    def check_for(self, principal, original) -> None:
        from coalition.errors import PermissionDenied

        if not self.allows_for(principal, original):
            raise PermissionDenied(
                f"Reversing a {original.kind} needs a key with the "
                f"{self.SCOPES[original.kind]} scope"
            )


class ReverseTransaction(BaseMutation):
    """Reverse (refund) one of your earns or redemptions, in full or in part."""

    class Arguments:
        input = ReverseTransactionInput(required=True)

    class Meta:
        output = ReverseTransactionPayload

    permission = PartnerKey("earn", "burn")
    object_permission = ScopeOfOriginal()

    @classmethod
    def perform(cls, info, principal, input):
        from coalition.selectors import transaction_get_for_partner
        from partners.services import partner_transaction_reverse

        original = transaction_get_for_partner(
            partner_id=principal.partner.pk,
            transaction_id=decode_id(
                input.transaction_id, "PointsTransaction", field="transactionId"
            ),
        )
        cls.object_permission.check_for(principal, original)
        reversal = partner_transaction_reverse(
            partner=principal.partner,
            idempotency_key=input.idempotency_key,
            transaction_id=original.pk,
            points=input.points,
            reason=input.reason or "",
        )
        return ReverseTransactionPayload(transaction=reversal, member=reversal.member, errors=[])


# ---------------------------------------------------------------------------- webhooks


class RegisterWebhookEndpointInput(graphene.InputObjectType):
    url = graphene.String(required=True, description="https URL that receives your events.")
    idempotency_key = graphene.String(required=True)


class RegisterWebhookEndpointPayload(Payload):
    endpoint = graphene.Field(WebhookEndpoint)
    secret = graphene.String(
        description="Signs every delivery (Coalition-Signature). Shown only in this answer "
        "(and its idempotent replays): store it now."
    )


class RegisterWebhookEndpoint(BaseMutation):
    """Receive your events (points.earned, points.redeemed, transaction.reversed,
    member.tier_changed, hold.expired, settlement.statement_ready) at a URL, signed."""

    class Arguments:
        input = RegisterWebhookEndpointInput(required=True)

    class Meta:
        output = RegisterWebhookEndpointPayload

    permission = PartnerKey()

    @classmethod
    def perform(cls, info, principal, input):
        from partners.webhooks import endpoint_register

        endpoint, _replayed = endpoint_register(
            partner=principal.partner, url=input.url, idempotency_key=input.idempotency_key
        )
        return RegisterWebhookEndpointPayload(endpoint=endpoint, secret=endpoint.secret, errors=[])


# ---------------------------------------------------------------------------- batch earning


class RecordPurchasesInput(graphene.InputObjectType):
    purchases = graphene.List(
        graphene.NonNull(RecordPurchaseInput),
        required=True,
        description="At most 1,000; each keeps its own idempotencyKey.",
    )
    idempotency_key = graphene.String(
        required=True,
        description=(
            "The batch's own key: the same key with the same purchases returns the first "
            "answer and records nothing; with other purchases it is IDEMPOTENCY_CONFLICT."
        ),
    )


class RecordPurchasesResult(graphene.ObjectType):
    """What became of one purchase of the batch (`index` in the input list)."""

    index = graphene.Int(required=True)
    transaction = graphene.Field(PointsTransaction, description="Null when nothing was earned.")
    points_awarded = graphene.Int(required=True)
    errors = graphene.List(graphene.NonNull(Error), required=True)


class RecordPurchasesPayload(Payload):
    results = graphene.List(graphene.NonNull(RecordPurchasesResult), required=True)

    @staticmethod
    def resolve_results(root, info):
        return getattr(root, "results", None) or []


class RecordPurchases(BaseMutation):
    """Record up to 1,000 purchases at once (earn scope). A purchase that is refused writes
    nothing and does not stop the others; its reason is in its result's `errors`
    (`input.purchases.<i>.<field>`). Each purchase is replayed by its own idempotency key."""

    class Arguments:
        input = RecordPurchasesInput(required=True)

    class Meta:
        output = RecordPurchasesPayload

    permission = EARN

    @classmethod
    def perform(cls, info, principal, input):
        from coalition.models import LedgerTransaction
        from partners.services.batch import purchases_record_batch

        # The service checks the batch's key and size, and replays a batch sent again.
        outcomes = purchases_record_batch(
            partner=principal.partner,
            idempotency_key=input.idempotency_key,
            purchases=[_purchase_fields(purchase) for purchase in input.purchases],
        )
        transactions = LedgerTransaction.objects.in_bulk(
            [outcome.transaction_id for outcome in outcomes if outcome.transaction_id]
        )
        fields = cls.input_fields()
        results = []
        for outcome in outcomes:
            errors = []
            if not outcome.accepted:
                errors.append(
                    {
                        "field": input_path(outcome.field, fields),
                        "code": outcome.code,
                        "message": outcome.message,
                    }
                )
            results.append(
                RecordPurchasesResult(
                    index=outcome.index,
                    transaction=transactions.get(outcome.transaction_id),
                    points_awarded=outcome.points_awarded if outcome.accepted else 0,
                    errors=errors,
                )
            )
        return RecordPurchasesPayload(results=results, errors=[])


class PartnerMutations(graphene.ObjectType):
    enroll_member = EnrollMember.Field()
    record_purchase = RecordPurchase.Field()
    record_purchases = RecordPurchases.Field()
    redeem_points = RedeemPoints.Field()
    authorize_redemption = AuthorizeRedemption.Field()
    capture_redemption = CaptureRedemption.Field()
    void_redemption = VoidRedemption.Field()
    reverse_transaction = ReverseTransaction.Field()
    register_webhook_endpoint = RegisterWebhookEndpoint.Field()

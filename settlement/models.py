"""Settlement: runs that turn claimed ledger transactions into money owed between the
operator, its partners and charities, and the Stripe objects that move that money.

The ledger is immutable, so a run records which transactions it settles in a table of its
own (`SettlementClaim`, one row per transaction, unique): a transaction is settled at most
once, and a discarded draft gives its transactions back by deleting its claims.

Money is `Decimal`: the priced components keep their exact value (points x a price with six
decimal places), each line is rounded once to the currency's minor unit, and the remainders
are booked to the operator on the run. See docs/settlement.md for the formulas.
"""

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

MONEY = {"max_digits": 24, "decimal_places": 6}


def _money(**kwargs) -> models.DecimalField:
    return models.DecimalField(default=0, **MONEY, **kwargs)


class SettlementRun(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        APPROVED = "approved", "Approved"
        EXECUTING = "executing", "Executing"
        COMPLETED = "completed", "Completed"
        PARTIALLY_FAILED = "partially_failed", "Partially failed"
        DISCARDED = "discarded", "Discarded"

    OPEN_STATUSES = (Status.DRAFT, Status.APPROVED, Status.EXECUTING)

    reference = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    period_end = models.DateTimeField(help_text="Transactions created before this are settled.")
    currency = models.CharField(max_length=3)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    claimed_transactions = models.PositiveBigIntegerField(default=0)
    # Every transaction with a smaller id had been claimed (or was never committed) when this
    # run claimed: the next run looks at ids from here on only (computation.claim_floor).
    # None: not known (SQLite, or open transactions outlasted the claim's wait).
    claim_floor_id = models.BigIntegerField(null=True, blank=True, editable=False)
    # Points moved by the claimed transactions (net of reversals).
    issued_points = models.BigIntegerField(default=0, help_text="Partner-issued, not matches.")
    operator_funded_points = models.BigIntegerField(default=0)
    redeemed_points = models.BigIntegerField(default=0)
    donated_points = models.BigIntegerField(default=0)
    matched_points = models.BigIntegerField(default=0)
    expired_points = models.BigIntegerField(default=0)
    outstanding_points_start = models.BigIntegerField(default=0)
    outstanding_points_end = models.BigIntegerField(default=0)

    # Exact priced totals of the lines' components.
    issuance_amount = _money()
    match_amount = _money(help_text="Sponsors' matches at their issuance prices.")
    redemption_amount = _money()
    donation_amount = _money(help_text="Charities' donations and matches at donation prices.")
    # Carrying value per outstanding point (weighted average, shown to 10 places).
    carrying_price = models.DecimalField(max_digits=30, decimal_places=10, default=0)

    # The totals, in minor units of the currency (see docs/settlement.md).
    total_paid_out = _money()
    total_collected = _money()
    carried_in = _money(help_text="Signed: positive is owed to counterparties.")
    carried_forward = _money(help_text="Signed: positive is owed to counterparties.")
    spread_revenue = _money()
    match_revenue = _money()
    breakage_revenue = _money()
    rounding_revenue = _money()
    operator_revenue = _money()
    points_float_start = _money()
    points_float_end = _money()
    float_start = _money()
    float_end = _money()

    class Meta:
        db_table = "settlement_run"
        ordering = ["-id"]
        constraints = [
            # One open run at a time: a constant key, unique among the open runs only.
            models.UniqueConstraint(
                models.Value(1),
                condition=Q(status__in=["draft", "approved", "executing"]),
                name="settlement_one_open_run",
            ),
        ]

    def __str__(self) -> str:
        return f"Run #{self.pk} to {self.period_end:%Y-%m-%d %H:%M} ({self.status})"

    @property
    def transfer_group(self) -> str:
        """Stripe's transfer_group for every pay-out of this run."""
        return f"settlement-run-{self.pk}-{self.reference.hex[:12]}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES

    @property
    def float_change(self):
        return self.float_end - self.float_start


class SettlementClaim(models.Model):
    """A ledger transaction settled by a run. The primary key is the transaction: it can
    never be claimed twice.

    No foreign-key constraints: claims are only ever written by one INSERT ... SELECT from
    the transactions table (whose rows a trigger keeps from ever being deleted) with the id
    of the run created in the same database transaction (runs are never deleted), and the
    two million deferred key checks of a million-transaction run cost more than the claim
    itself (2.6 s measured, bench/settlement.py).
    """

    transaction = models.OneToOneField(
        "coalition.LedgerTransaction",
        primary_key=True,
        on_delete=models.DO_NOTHING,
        related_name="settlement_claim",
        db_constraint=False,
    )
    run = models.ForeignKey(
        SettlementRun,
        on_delete=models.DO_NOTHING,
        related_name="claims",
        db_constraint=False,
        db_index=False,
    )

    class Meta:
        db_table = "settlement_claim"
        # A run's claims by run, in transaction order: its id range (min, max) is two index
        # probes, and the aggregate bounds the ledger tables by it.
        indexes = [models.Index(fields=["run", "transaction"], name="claim_run_transaction")]


_NET = models.F("rounded_amount") + models.F("carried_in_amount")
_HALF_MICRO = models.Value(Decimal("0.0000005"), output_field=models.DecimalField(**MONEY))


class SettlementLine(models.Model):
    """What one partner or charity is owed (positive) or owes (negative) for a run."""

    class Direction(models.TextChoices):
        PAY_OUT = "pay_out", "Pay out"
        COLLECT = "collect", "Collect"
        CARRY_FORWARD = "carry_forward", "Carry forward"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        PAID = "paid", "Paid"
        FAILED = "failed", "Failed"
        CARRIED_FORWARD = "carried_forward", "Carried forward"

    run = models.ForeignKey(SettlementRun, on_delete=models.PROTECT, related_name="lines")
    reference = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    partner = models.ForeignKey(
        "partners.Partner", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    charity = models.ForeignKey(
        "charity.Charity", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    currency = models.CharField(max_length=3)

    # Points, net of reversals; the reversals are also shown on their own.
    issued_points = models.BigIntegerField(default=0)
    issued_reversed_points = models.BigIntegerField(default=0)
    redeemed_points = models.BigIntegerField(default=0)
    redeemed_reversed_points = models.BigIntegerField(default=0)
    matched_points = models.BigIntegerField(default=0)
    donated_points = models.BigIntegerField(default=0)

    # Exact money of the priced components.
    issuance_amount = _money(help_text="Owed by the partner for points it issued.")
    match_amount = _money(
        help_text="Owed by the sponsor for its matches (partner lines); "
        "matches disbursed (charity lines)."
    )
    redemption_amount = _money(help_text="Owed to the partner for points redeemed at it.")
    donation_amount = _money(help_text="Owed to the charity for donated points.")
    exact_amount = _money(help_text="The line's exact value before rounding and carry.")
    rounded_amount = _money()
    rounding_remainder = _money(help_text="exact - rounded: kept (+) or given (-) by the operator")
    carried_in_amount = _money()
    net_amount = _money(help_text="Positive: the operator pays; negative: it collects.")

    direction = models.CharField(max_length=16, choices=Direction.choices)
    status = models.CharField(max_length=16, choices=Status.choices)
    hold_reason = models.CharField(max_length=255, blank=True, default="")
    carried_to_run = models.ForeignKey(
        SettlementRun,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="carried_lines",
        help_text="The run this carried-forward amount was taken into.",
    )

    # Execution.
    attempt = models.PositiveIntegerField(default=1)
    stripe_object_id = models.CharField(max_length=255, blank=True, default="")
    stripe_status = models.CharField(max_length=64, blank=True, default="")
    failure_code = models.CharField(max_length=64, blank=True, default="")
    failure_reason = models.TextField(blank=True, default="")
    paid_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "settlement_line"
        ordering = ["run", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(partner__isnull=False, charity__isnull=True)
                | Q(partner__isnull=True, charity__isnull=False),
                name="settlement_line_one_counterparty",
            ),
            models.UniqueConstraint(
                fields=["run", "partner"],
                condition=Q(partner__isnull=False),
                name="settlement_line_one_per_partner",
            ),
            models.UniqueConstraint(
                fields=["run", "charity"],
                condition=Q(charity__isnull=False),
                name="settlement_line_one_per_charity",
            ),
            # net = rounded + carried in. Within half a millionth: exact with PostgreSQL's
            # numerics (amounts have 6 places), tolerant of SQLite comparing them as floats.
            models.CheckConstraint(
                condition=Q(net_amount__gte=_NET - _HALF_MICRO, net_amount__lte=_NET + _HALF_MICRO),
                name="settlement_line_net_adds_up",
            ),
        ]
        indexes = [
            models.Index(
                fields=["partner", "charity"],
                condition=Q(status="carried_forward", carried_to_run__isnull=True),
                name="settlement_line_carry_pending",
            ),
            models.Index(fields=["stripe_object_id"], name="settlement_line_stripe"),
        ]

    def __str__(self) -> str:
        return f"{self.counterparty}: {self.net_amount} {self.currency} ({self.direction})"

    @property
    def counterparty(self):
        return self.partner if self.partner_id else self.charity

    @property
    def counterparty_label(self) -> str:
        if self.partner_id:
            return f"partner {self.partner.code}"
        return f"charity {self.charity.name}"

    @property
    def idempotency_key(self) -> str:
        """The Stripe idempotency key of this line's current attempt."""
        return f"settlement-line-{self.reference}-{self.attempt}"


class SettlementLineComponent(models.Model):
    """One priced part of a line: points at one price (a statement row)."""

    class Kind(models.TextChoices):
        ISSUED = "issued", "Points issued"
        ISSUED_REVERSED = "issued_reversed", "Issued points reversed"
        REDEEMED = "redeemed", "Points redeemed"
        REDEEMED_REVERSED = "redeemed_reversed", "Redeemed points reversed"
        MATCH = "match", "Sponsor matches"
        MATCH_REVERSED = "match_reversed", "Sponsor matches reversed"
        DONATED = "donated", "Points donated"
        DONATED_REVERSED = "donated_reversed", "Donations refunded"
        MATCH_RECEIVED = "match_received", "Matched points received"
        MATCH_RECEIVED_REVERSED = "match_received_reversed", "Matched points reversed"

    line = models.ForeignKey(SettlementLine, on_delete=models.CASCADE, related_name="components")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    terms = models.ForeignKey(
        "partners.CommercialTerms",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    price = models.DecimalField(max_digits=12, decimal_places=6)
    # Signed as they count for the counterparty: + is owed to it, - is owed by it.
    points = models.BigIntegerField()
    amount = _money()

    class Meta:
        db_table = "settlement_line_component"
        ordering = ["line", "kind", "price"]


class SettlementTransition(models.Model):
    """Who moved a run (or one of its lines) from which state to which, and when."""

    run = models.ForeignKey(SettlementRun, on_delete=models.PROTECT, related_name="transitions")
    line = models.ForeignKey(
        SettlementLine, null=True, blank=True, on_delete=models.CASCADE, related_name="transitions"
    )
    from_status = models.CharField(max_length=20, blank=True, default="")
    to_status = models.CharField(max_length=20)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_label = models.CharField(
        max_length=64, help_text="staff:3, system:execution, stripe:evt_…"
    )
    note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "settlement_transition"
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        what = f"line #{self.line_id}" if self.line_id else f"run #{self.run_id}"
        return f"{what}: {self.from_status or '—'} → {self.to_status} by {self.actor_label}"


class StripeEvent(models.Model):
    """A webhook event, recorded once by its id. Only a trigger: processing fetches the
    object again from Stripe."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=128)
    account = models.CharField(max_length=255, blank=True, default="")
    object_id = models.CharField(max_length=255, blank=True, default="")
    created = models.DateTimeField(null=True, blank=True, help_text="When Stripe created it.")
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict)

    class Meta:
        db_table = "settlement_stripe_event"
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type}"


class ConnectedPayout(models.Model):
    """A payout from a partner's or charity's connected account to its bank, as Stripe last
    reported it (payout.paid / payout.failed)."""

    payout_id = models.CharField(max_length=255, unique=True)
    stripe_account = models.CharField(max_length=255)
    partner = models.ForeignKey(
        "partners.Partner", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    charity = models.ForeignKey(
        "charity.Charity", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    amount = _money()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=32)
    arrival_date = models.DateTimeField(null=True, blank=True)
    failure_code = models.CharField(max_length=64, blank=True, default="")
    failure_message = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "settlement_connected_payout"
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return f"{self.payout_id} {self.amount} {self.currency} {self.status}"


class Reconciliation(models.Model):
    """What Stripe holds for a run compared with its lines, at one moment."""

    run = models.ForeignKey(SettlementRun, on_delete=models.PROTECT, related_name="reconciliations")
    created_at = models.DateTimeField(default=timezone.now)
    clean = models.BooleanField()
    checked_lines = models.PositiveIntegerField(default=0)
    stripe_objects = models.PositiveIntegerField(default=0)
    # [{"kind": missing|extra|amount_mismatch|destination_mismatch|status_mismatch|duplicate,
    #   "line": id|None, "stripe_id": str|None, "expected": str, "actual": str, "message": str}]
    differences = models.JSONField(default=list)

    class Meta:
        db_table = "settlement_reconciliation"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        state = "clean" if self.clean else f"{len(self.differences)} difference(s)"
        return f"Run #{self.run_id} reconciled {self.created_at:%Y-%m-%d %H:%M}: {state}"

"""The programme, its members and the double-entry points ledger.

Every change of points is one `LedgerTransaction` with two or more `Entry` rows summing to
zero. Transactions and entries are never updated or deleted (PostgreSQL triggers enforce it,
see migrations/0002_ledger_rules.py); mistakes are fixed by reversing transactions.

Only member wallets keep a cached balance (locked and updated on every posting to them);
partner, charity, breakage and operator accounts are derived by aggregate, so that no posting
ever queues on a shared row.
"""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower, Now
from django.utils import timezone


class Programme(models.Model):
    """The coalition programme: its currency and its rules. One per deployment."""

    class ExpiryPolicy(models.TextChoices):
        FIXED = "fixed", "Fixed lifetime"
        INACTIVITY = "inactivity", "After inactivity"
        NONE = "none", "Never"

    name = models.CharField(max_length=200, default="Coalition")
    currency = models.CharField(max_length=3, default="USD")
    expiry_policy = models.CharField(
        max_length=16, choices=ExpiryPolicy.choices, default=ExpiryPolicy.FIXED
    )
    expiry_months = models.PositiveIntegerField(
        default=24, help_text="Lifetime of a lot (fixed) or months without activity (inactivity)."
    )
    expire_at_month_end = models.BooleanField(
        default=False, help_text="Fixed lifetime: expire at the end of the month it ends in."
    )
    donation_price = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal("0.01"),
        help_text="Money value of one donated point, in the programme currency.",
    )
    min_redemption_points = models.PositiveIntegerField(default=100)
    min_donation_points = models.PositiveIntegerField(default=100)
    daily_burn_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most points one member may burn per day (empty: none)."
    )
    tier_grace_days = models.PositiveIntegerField(default=30)
    welcome_bonus_points = models.PositiveIntegerField(
        default=0, help_text="Operator-funded points on enrolment (0: none)."
    )
    referral_bonus_points = models.PositiveIntegerField(
        default=0, help_text="Operator-funded points to referrer and referee on the first purchase."
    )
    birthday_bonus_points = models.PositiveIntegerField(
        default=0, help_text="Operator-funded points once a year on the member's birthday."
    )

    class Meta:
        db_table = "coalition_programme"

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        from .services.posting import caches_clear

        caches_clear()  # this process sees the change at once; others within seconds


class Member(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        CLOSED = "closed", "Closed"

    member_number = models.CharField(max_length=16, unique=True)
    email = models.CharField(max_length=254)
    display_name = models.CharField(max_length=200)
    birth_date = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    password = models.CharField(max_length=255, blank=True, default="")
    # Bumped on password change: every member token signed with an older version stops working.
    token_version = models.PositiveIntegerField(default=1)
    referral_code = models.CharField(max_length=16, unique=True, null=True, blank=True)
    referred_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="referrals"
    )
    enrolled_by = models.ForeignKey(
        "partners.Partner", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "coalition_member"
        constraints = [
            models.UniqueConstraint(Lower("email"), name="member_email_ci_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.member_number} {self.display_name}"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class Account(models.Model):
    """A ledger account. Member wallets carry a cached balance; the others never do."""

    class Kind(models.TextChoices):
        MEMBER_WALLET = "member_wallet", "Member wallet"
        PARTNER_ISSUED = "partner_issued", "Partner issued"
        PARTNER_REDEEMED = "partner_redeemed", "Partner redeemed"
        CHARITY_RECEIVED = "charity_received", "Charity received"
        BREAKAGE = "breakage", "Programme breakage"
        OPERATOR_MARKETING = "operator_marketing", "Operator marketing"
        OPERATOR_ADJUSTMENT = "operator_adjustment", "Operator adjustments"

    kind = models.CharField(max_length=24, choices=Kind.choices)
    member = models.OneToOneField(
        Member, null=True, blank=True, on_delete=models.PROTECT, related_name="wallet"
    )
    # Partial indexes (Meta): millions of wallets have neither, and a full index would hold
    # a NULL for each of them.
    partner = models.ForeignKey(
        "partners.Partner",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    charity = models.ForeignKey(
        "charity.Charity",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    # Member wallets only: the sum of the wallet's entries, and points reserved by holds.
    balance = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)
    last_activity_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "coalition_account"
        indexes = [
            models.Index(
                fields=["partner"], condition=Q(partner__isnull=False), name="account_partner"
            ),
            models.Index(
                fields=["charity"], condition=Q(charity__isnull=False), name="account_charity"
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(held__gte=0), name="account_held_gte_0"),
            models.CheckConstraint(
                condition=(
                    Q(kind="member_wallet", member__isnull=False)
                    | (~Q(kind="member_wallet") & Q(member__isnull=True, balance=0, held=0))
                ),
                name="account_only_wallets_cache_balance",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["partner_issued", "partner_redeemed"], partner__isnull=False)
                | (~Q(kind__in=["partner_issued", "partner_redeemed"]) & Q(partner__isnull=True)),
                name="account_partner_kinds",
            ),
            models.CheckConstraint(
                condition=Q(kind="charity_received", charity__isnull=False)
                | (~Q(kind="charity_received") & Q(charity__isnull=True)),
                name="account_charity_kind",
            ),
            models.UniqueConstraint(
                fields=["kind", "partner"],
                condition=Q(partner__isnull=False),
                name="account_one_per_partner_kind",
            ),
            models.UniqueConstraint(
                fields=["kind", "charity"],
                condition=Q(charity__isnull=False),
                name="account_one_per_charity",
            ),
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(kind__in=["breakage", "operator_marketing", "operator_adjustment"]),
                name="account_one_per_programme_kind",
            ),
        ]

    def __str__(self) -> str:
        owner = self.member_id or self.partner_id or self.charity_id or "programme"
        return f"{self.kind}:{owner}"

    @property
    def spendable(self) -> int:
        return max(self.balance - self.held, 0)


class LedgerTransaction(models.Model):
    """One journal entry. Immutable once written."""

    class Kind(models.TextChoices):
        EARN = "earn", "Earn"
        BONUS = "bonus", "Bonus"
        BURN = "burn", "Burn"
        DONATE = "donate", "Donate"
        MATCH = "match", "Sponsor match"
        EXPIRE = "expire", "Expire"
        REVERSAL = "reversal", "Reversal"
        ADJUSTMENT = "adjustment", "Adjustment"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    # No database foreign keys (db_constraint=False): as for entries and lots, a row-level FK
    # check per transaction at commit took a KEY SHARE lock on the partner's row, a row every
    # posting at that partner shared. A statement-level trigger checks the references instead
    # (coalition/sql/postgresql_transaction_references.sql), and members, partners, charities
    # and holds refuse deletion while a transaction names them.
    # Every index on this table is written by every posting, so each one has to earn its
    # place: member and partner are covered by txn_member_history / txn_partner_time (their
    # leading column); charity, reversal_of and hold are rarely set, so their indexes below
    # are partial (a posting without them writes nothing there).
    member = models.ForeignKey(
        Member,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="transactions",
        db_index=False,
        db_constraint=False,
    )
    partner = models.ForeignKey(
        "partners.Partner",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    charity = models.ForeignKey(
        "charity.Charity",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    # Signed points on the member's wallet, as the member sees them (0 when no wallet moved).
    member_points = models.BigIntegerField(default=0)
    reference = models.CharField(max_length=255, blank=True, default="")
    # Who asked for it ("partner:12", "member:7", "staff:3", "system:expiry") and their key.
    caller = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_hash = models.CharField(max_length=64, blank=True, default="")
    purchase_amount = models.DecimalField(max_digits=18, decimal_places=4, null=True, blank=True)
    purchase_currency = models.CharField(max_length=3, blank=True, default="")
    reversal_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="reversals",
        db_index=False,
        db_constraint=False,
    )
    hold = models.ForeignKey(
        "RedemptionHold",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="captures",
        db_index=False,
        db_constraint=False,
    )
    created_at = models.DateTimeField(default=timezone.now)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "coalition_transaction"
        constraints = [
            models.UniqueConstraint(
                fields=["caller", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="transaction_idempotency_unique",
            ),
            models.CheckConstraint(
                condition=~Q(kind="reversal") | Q(reversal_of__isnull=False),
                name="transaction_reversal_has_original",
            ),
        ]
        indexes = [
            models.Index(fields=["member", "-created_at", "-id"], name="txn_member_history"),
            models.Index(fields=["partner", "created_at"], name="txn_partner_time"),
            models.Index(fields=["created_at", "id"], name="txn_created"),
            models.Index(
                fields=["charity"], condition=Q(charity__isnull=False), name="txn_charity"
            ),
            models.Index(
                fields=["reversal_of"],
                condition=Q(reversal_of__isnull=False),
                name="txn_reversal_of",
            ),
            models.Index(fields=["hold"], condition=Q(hold__isnull=False), name="txn_hold"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.member_points:+d})"


class Entry(models.Model):
    """One leg of a transaction: signed whole points on one account. Append-only."""

    # No database foreign keys here and on lots (db_constraint=False): a row-level FK check
    # per entry at commit, each taking a KEY SHARE lock on its parent, put every posting of a
    # partner on that partner's issued-account row. The ledger's statement-level trigger
    # checks instead, once per INSERT, that the transactions and accounts exist
    # (coalition/sql/postgresql_entry_references.sql); parents are never deleted (transactions
    # are immutable; accounts and members refuse deletion while entries or lots point at them).
    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="entries", db_constraint=False
    )
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="entries", db_constraint=False
    )
    points = models.BigIntegerField()

    class Meta:
        db_table = "coalition_entry"
        verbose_name_plural = "entries"
        constraints = [
            models.CheckConstraint(condition=~Q(points=0), name="entry_points_not_zero"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}: {self.points:+d}"


class PointLot(models.Model):
    """Points earned together, expiring together. Spending consumes earliest-expiring first."""

    # Checked by trigger, not by foreign key: see Entry.
    member = models.ForeignKey(
        Member, on_delete=models.PROTECT, related_name="lots", db_constraint=False
    )
    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="lots", db_constraint=False
    )
    points = models.BigIntegerField()
    remaining = models.BigIntegerField()
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "coalition_lot"
        constraints = [
            models.CheckConstraint(condition=Q(points__gt=0), name="lot_points_gt_0"),
            models.CheckConstraint(
                condition=Q(remaining__gte=0, remaining__lte=models.F("points")),
                name="lot_remaining_within_points",
            ),
        ]
        indexes = [
            models.Index(
                fields=["member", "expires_at", "id"],
                condition=Q(remaining__gt=0),
                name="lot_member_open",
            ),
            models.Index(fields=["expires_at"], condition=Q(remaining__gt=0), name="lot_due"),
        ]


class RedemptionHold(models.Model):
    """Points reserved at a till, captured (in part or whole) or voided later."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        CAPTURED = "captured", "Captured"
        VOIDED = "voided", "Voided"
        EXPIRED = "expired", "Expired"

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="holds")
    partner = models.ForeignKey("partners.Partner", on_delete=models.PROTECT, related_name="+")
    points = models.BigIntegerField()
    captured_points = models.BigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    reference = models.CharField(max_length=255, blank=True, default="")
    caller = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "coalition_hold"
        constraints = [
            models.UniqueConstraint(
                fields=["caller", "idempotency_key"], name="hold_idempotency_unique"
            ),
            models.CheckConstraint(condition=Q(points__gt=0), name="hold_points_gt_0"),
            models.CheckConstraint(
                condition=Q(captured_points__gte=0, captured_points__lte=models.F("points")),
                name="hold_capture_within_points",
            ),
        ]
        indexes = [
            models.Index(fields=["expires_at"], condition=Q(status="active"), name="hold_due"),
            models.Index(fields=["member", "status"], name="hold_member_status"),
        ]

    def __str__(self) -> str:
        return f"hold #{self.pk} {self.points} ({self.status})"


class IdempotencyRecord(models.Model):
    """The first result of an outside write that is not itself a ledger transaction."""

    caller = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=255)
    operation = models.CharField(max_length=64)
    request_hash = models.CharField(max_length=64)
    result_id = models.BigIntegerField(null=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "coalition_idempotency"
        constraints = [
            models.UniqueConstraint(
                fields=["caller", "idempotency_key"], name="idempotency_record_unique"
            ),
        ]


class AdjustmentNote(models.Model):
    """Who made an operator adjustment and why (the transaction itself stays immutable)."""

    transaction = models.OneToOneField(
        LedgerTransaction, on_delete=models.PROTECT, related_name="adjustment_note"
    )
    staff_user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    reason = models.TextField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "coalition_adjustment_note"


class Tier(models.Model):
    """A coalition-wide tier, reached by qualifying points earned in the last 12 months."""

    code = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    qualifying_points = models.PositiveBigIntegerField(
        unique=True, help_text="Points earned in the last 12 months to reach this tier (0: base)."
    )
    earn_multiplier = models.DecimalField(max_digits=6, decimal_places=3, default=Decimal("1"))

    class Meta:
        db_table = "coalition_tier"
        ordering = ["qualifying_points"]
        constraints = [
            models.CheckConstraint(
                condition=Q(earn_multiplier__gt=0), name="tier_multiplier_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        from .services.posting import caches_clear

        caches_clear()

    def delete(self, *args, **kwargs):
        result = super().delete(*args, **kwargs)
        from .services.posting import caches_clear

        caches_clear()
        return result


class MemberTier(models.Model):
    """A member's current tier, and since when they have been below its threshold."""

    member = models.OneToOneField(Member, on_delete=models.PROTECT, related_name="tier_state")
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="+")
    since = models.DateTimeField(default=timezone.now)
    below_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "coalition_member_tier"


class TierChange(models.Model):
    """Tier history: every upgrade and downgrade of a member."""

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="tier_changes")
    from_tier = models.ForeignKey(Tier, null=True, on_delete=models.PROTECT, related_name="+")
    to_tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="+")
    qualifying_points = models.BigIntegerField()
    reason = models.CharField(max_length=32)  # "earn" or "recalculation"
    created_at = models.DateTimeField(default=timezone.now)
    # When the member was told (coalition.tasks.notify_tier_change): the outbox delivers at
    # least once, this makes the mail go once.
    notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "coalition_tier_change"
        ordering = ["-created_at", "-id"]


class ExpiryNotice(models.Model):
    """The mail telling a member that points expire on a date (coalition/notifications.py).

    At most one per member and expiry date, by unique key: the row is recorded before the
    mail goes, so two runs at once (two beats, a retried task) record it once, and
    `sent_at` is set in the transaction that sent it, so it goes once. A row whose mail
    failed stays unsent and the next run sends it, with the points then due."""

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="expiry_notices")
    expires_on = models.DateField()
    # What will expire that day (coalition.services.expiry.expiry_due), as last computed.
    points = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "coalition_expiry_notice"
        constraints = [
            models.UniqueConstraint(fields=["member", "expires_on"], name="expiry_notice_once"),
            models.CheckConstraint(condition=Q(points__gt=0), name="expiry_notice_points_gt_0"),
        ]

    def __str__(self) -> str:
        state = "sent" if self.sent_at else "pending"
        return f"{self.points} points of member #{self.member_id} on {self.expires_on} ({state})"


# --------------------------------------------------------------------------- reliability
# Issue 9: the transactional outbox and the audit trail. App-agnostic: every app depends on
# coalition, so any app can enqueue follow-up work or record a staff action here.


class OutboxMessage(models.Model):
    """Follow-up work recorded in the database transaction of the write that causes it
    (a partner webhook, a notification, a Celery job) and dispatched after the commit by
    the relay (coalition/outbox.py). Nothing is lost when the broker is down: the row waits."""

    topic = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(db_default=Now())
    dispatched_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    # A row whose handler failed waits until then (backoff); null: due now.
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "coalition_outbox"
        indexes = [
            models.Index(
                fields=["id"], condition=Q(dispatched_at__isnull=True), name="outbox_pending"
            ),
            models.Index(
                fields=["dispatched_at"],
                condition=Q(dispatched_at__isnull=False),
                name="outbox_dispatched",
            ),
        ]

    def __str__(self) -> str:
        state = "dispatched" if self.dispatched_at else f"pending ({self.attempts} attempts)"
        return f"outbox #{self.pk} {self.topic} {state}"


class AuditEvent(models.Model):
    """Who did what to which object, when, with the object before and after. Append-only
    (PostgreSQL triggers reject UPDATE and DELETE, see migration 0004)."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Kept as text too, so the trail still names a user who was later renamed.
    actor_label = models.CharField(max_length=150, blank=True, default="")
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64, blank=True, default="")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "coalition_audit_event"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
            models.Index(fields=["actor", "-created_at"], name="audit_actor"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.object_type}#{self.object_id}"

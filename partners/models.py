"""Partner brands: the coalition's customers, who issue points and take them back."""

from decimal import Decimal

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone


class Partner(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    code = models.CharField(
        max_length=32,
        unique=True,
        validators=[
            RegexValidator(r"^[A-Z0-9][A-Z0-9_-]*$", "Upper-case letters, digits, - and _")
        ],
    )
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, validators=[RegexValidator(r"^[A-Z]{3}$")])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    earn_rate = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        default=Decimal("1"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Base points per currency unit spent.",
    )
    stripe_account_id = models.CharField(max_length=255, blank=True, default="")
    stripe_customer_id = models.CharField(max_length=255, blank=True, default="")
    contact_email = models.EmailField(blank=True, default="")
    excluded_categories = models.JSONField(
        default=list, blank=True, help_text="Line-item categories that earn no points."
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(earn_rate__gte=0), name="partner_earn_rate_gte_0"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class Store(models.Model):
    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="stores")
    code = models.CharField(max_length=64)
    name = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["partner", "code"], name="store_code_unique_per_partner"
            )
        ]

    def __str__(self) -> str:
        return f"{self.partner.code}/{self.code}"


class CommercialTerms(models.Model):
    """Prices per point from a moment on. Never edited once in force: a change is a new row,
    so every transaction is priced at the terms in force when it happened."""

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="terms")
    valid_from = models.DateTimeField()
    issuance_price = models.DecimalField(
        max_digits=12, decimal_places=6, help_text="What the partner pays per point it issues."
    )
    redemption_price = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        help_text="What the partner is reimbursed per point redeemed at its tills.",
    )
    allow_redemption_above_issuance = models.BooleanField(
        default=False,
        help_text="The operator accepts reimbursing more per point than the partner pays.",
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        verbose_name_plural = "commercial terms"
        ordering = ["partner", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["partner", "valid_from"], name="terms_one_per_moment"),
            models.CheckConstraint(
                condition=models.Q(issuance_price__gte=0, redemption_price__gte=0),
                name="terms_prices_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(allow_redemption_above_issuance=True)
                | models.Q(redemption_price__lte=models.F("issuance_price")),
                name="terms_redemption_not_above_issuance",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.partner.code} from {self.valid_from:%Y-%m-%d %H:%M}: "
            f"issue {self.issuance_price}, redeem {self.redemption_price}"
        )


class ApiKey(models.Model):
    """A partner's API key. Only a SHA-256 digest of the secret is stored."""

    class Scope(models.TextChoices):
        EARN = "earn", "Earn"
        BURN = "burn", "Burn"
        READ = "read", "Read"

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=16, help_text="The first characters, to recognise it.")
    digest = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(db_default=Now())
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.partner.code} {self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Promotion(models.Model):
    """A time-boxed earn rule. Owned by a partner (it funds it) or coalition-wide (the
    operator funds it from its marketing account)."""

    class Kind(models.TextChoices):
        MULTIPLIER = "multiplier", "Multiplier"
        FIXED_BONUS = "fixed_bonus", "Fixed bonus"
        CROSS_BRAND = "cross_brand", "Cross-brand bonus (second partner in a month)"

    partner = models.ForeignKey(
        Partner,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="promotions",
        help_text="Empty: coalition-wide, funded by the operator.",
    )
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    multiplier = models.DecimalField(max_digits=6, decimal_places=3, default=Decimal("1"))
    bonus_points = models.PositiveIntegerField(default=0)
    min_spend = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    categories = models.JSONField(default=list, blank=True, help_text="Basket must contain one.")
    skus = models.JSONField(default=list, blank=True, help_text="Basket must contain one.")
    tiers = models.ManyToManyField("coalition.Tier", blank=True, related_name="+")
    first_purchase_only = models.BooleanField(
        default=False, help_text="Only the member's first purchase at this partner."
    )
    per_member_limit = models.PositiveIntegerField(null=True, blank=True)
    budget_points = models.PositiveBigIntegerField(null=True, blank=True)
    awarded_points = models.PositiveBigIntegerField(default=0)
    exclusive = models.BooleanField(
        default=False, help_text="Not combined with other promotions; the best exclusive wins."
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")),
                name="promotion_window_forward",
            ),
            models.CheckConstraint(
                condition=models.Q(budget_points__isnull=True)
                | models.Q(awarded_points__lte=models.F("budget_points")),
                name="promotion_budget_never_overspent",
            ),
            models.CheckConstraint(
                condition=models.Q(multiplier__gt=0), name="promotion_multiplier_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def funded_by_operator(self) -> bool:
        return self.partner_id is None


class PromotionAward(models.Model):
    """Points a promotion added to one purchase (for limits, budgets and the breakdown)."""

    promotion = models.ForeignKey(Promotion, on_delete=models.PROTECT, related_name="awards")
    member = models.ForeignKey("coalition.Member", on_delete=models.PROTECT, related_name="+")
    transaction = models.ForeignKey(
        "coalition.LedgerTransaction", on_delete=models.PROTECT, related_name="+"
    )
    points = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["promotion", "member"], name="award_promo_member")]


class Reward(models.Model):
    """An item in a partner's rewards catalogue, bought with points."""

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="rewards")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    points_cost = models.PositiveIntegerField()
    stock = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: unlimited.")
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["points_cost", "name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(points_cost__gt=0), name="reward_cost_gt_0"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.points_cost} points)"


class RewardRedemption(models.Model):
    reward = models.ForeignKey(Reward, on_delete=models.PROTECT, related_name="redemptions")
    member = models.ForeignKey("coalition.Member", on_delete=models.PROTECT, related_name="+")
    transaction = models.OneToOneField(
        "coalition.LedgerTransaction", on_delete=models.PROTECT, related_name="reward_redemption"
    )
    created_at = models.DateTimeField(db_default=Now())


class PartnerIdentity(models.Model):
    """A partner's own customer reference linked to a member, to award by it."""

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="identities")
    member = models.ForeignKey("coalition.Member", on_delete=models.PROTECT, related_name="+")
    customer_reference = models.CharField(max_length=255)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        verbose_name_plural = "partner identities"
        constraints = [
            models.UniqueConstraint(
                fields=["partner", "customer_reference"], name="identity_reference_unique"
            ),
            models.UniqueConstraint(fields=["partner", "member"], name="identity_member_unique"),
        ]


class ReferralReward(models.Model):
    """The once-only referral bonus, given on the referee's first purchase."""

    referee = models.OneToOneField("coalition.Member", on_delete=models.PROTECT, related_name="+")
    referrer = models.ForeignKey("coalition.Member", on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(db_default=Now())


# --------------------------------------------------------------------------- webhooks
# Outbound events to partners (issue 4). The logic is in partners/webhooks.py.


class WebhookEndpoint(models.Model):
    """A partner's URL that receives its events, signed with the endpoint's secret.

    The secret is needed in clear to sign every delivery (HMAC), so it cannot be stored as a
    one-way digest like API keys: it is kept in the database as-is (protect the database
    and its backups accordingly) and shown to the partner once, when registered.
    """

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=100)
    created_at = models.DateTimeField(db_default=Now())
    disabled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["partner", "disabled_at"], name="webhook_endpoint_partner")]

    def __str__(self) -> str:
        return f"{self.partner.code} → {self.url}"


class WebhookSequence(models.Model):
    """The last event sequence number given to a partner (numbers have no gaps)."""

    partner = models.OneToOneField(
        Partner, primary_key=True, on_delete=models.PROTECT, related_name="+"
    )
    last = models.BigIntegerField(default=0)


class WebhookEvent(models.Model):
    """Something that happened to a partner's business, recorded in the same database
    transaction as the ledger write it reports, numbered per partner."""

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="webhook_events")
    # Given by the outbox relay after the commit (issue 9), not in the write path.
    sequence = models.BigIntegerField(null=True, blank=True)
    type = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    # Events found after the fact (hold expiry, tier change) name what they report, once.
    dedup_key = models.CharField(max_length=128, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["partner", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["partner", "sequence"], name="webhook_event_sequence"),
            models.UniqueConstraint(
                fields=["partner", "dedup_key"],
                condition=models.Q(dedup_key__isnull=False),
                name="webhook_event_dedup",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.partner_id}#{self.sequence} {self.type}"


class WebhookDelivery(models.Model):
    """One attempt to deliver an event to an endpoint (every attempt is kept)."""

    event = models.ForeignKey(WebhookEvent, on_delete=models.PROTECT, related_name="deliveries")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.PROTECT, related_name="deliveries"
    )
    attempt = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    attempted_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # Set on the latest failed attempt while another one is due; cleared when it is taken.
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-attempted_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["event", "endpoint", "attempt"], name="webhook_delivery_attempt"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(next_attempt_at__isnull=False),
                name="webhook_delivery_due",
            ),
        ]


# --------------------------------------------------------------------------- purchase files
# End-of-day purchase files recorded in chunks by Celery (issue 8). The logic is in
# partners/imports.py.


class PurchaseImport(models.Model):
    """A partner's CSV file of purchases, recorded chunk by chunk, each row with its own
    idempotency key (a file sent again adds nothing)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="purchase_imports")
    file_path = models.CharField(max_length=500, help_text="Where the workers read the file.")
    file_name = models.CharField(max_length=255, help_text="The name it was sent under.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    columns = models.JSONField(default=list, help_text="The file's header, in order.")
    chunk_size = models.PositiveIntegerField(default=1000)
    total_rows = models.PositiveBigIntegerField(default=0)
    processed_rows = models.PositiveBigIntegerField(default=0)
    accepted = models.PositiveBigIntegerField(default=0)
    rejected = models.PositiveBigIntegerField(default=0)
    result_path = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"import #{self.pk} {self.file_name} ({self.status})"


class PurchaseImportChunk(models.Model):
    """One chunk of an import: where its rows are in the file, and what became of them once
    a worker recorded them (counted once, however often the task runs)."""

    purchase_import = models.ForeignKey(
        PurchaseImport, on_delete=models.CASCADE, related_name="chunks"
    )
    start_row = models.PositiveBigIntegerField(help_text="Data rows before it (0-based).")
    row_count = models.PositiveIntegerField()
    byte_start = models.PositiveBigIntegerField()
    byte_end = models.PositiveBigIntegerField()
    accepted = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["purchase_import", "start_row"], name="import_chunk_start_unique"
            ),
        ]

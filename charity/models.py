"""Nonprofits that members give their points to, and the donations, campaigns and receipts.

The points themselves live in the coalition ledger: a donation is a DONATE transaction
(member wallet → charity received) and a sponsor's match a MATCH transaction (sponsor's
partner issued → charity received). The rows here are what the ledger does not know: the
receipt number, the money value at the programme's donation price, the campaign that
matched it, and the member's automatic-giving choices.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone


class Cause(models.Model):
    """What a charity works for. Seeded by a data migration; operators add more in admin."""

    code = models.SlugField(max_length=64, unique=True, help_text="Stable key, e.g. 'health'.")
    name = models.CharField(max_length=100)
    active = models.BooleanField(default=True, help_text="Inactive: no new charities use it.")
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return self.name


class Charity(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending verification"
        VERIFIED = "verified", "Verified"
        SUSPENDED = "suspended", "Suspended"

    name = models.CharField(max_length=200)
    registration_number = models.CharField(max_length=64)
    country = models.CharField(max_length=2, default="US", help_text="ISO 3166-1 alpha-2.")
    # The code of a `Cause` (kept as its code so that every reader gets a plain string).
    cause = models.CharField(max_length=64)
    description = models.TextField(blank=True, default="")
    website = models.URLField(blank=True, default="")
    logo_url = models.URLField(blank=True, default="")
    stripe_account_id = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        verbose_name_plural = "charities"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["country", "registration_number"], name="charity_registration_unique"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "verified", "suspended"]),
                name="charity_status_known",
            ),
        ]
        indexes = [models.Index(fields=["status", "cause"], name="charity_listed")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_verified(self) -> bool:
        return self.status == self.Status.VERIFIED


class CharityStatusChange(models.Model):
    """Who verified, suspended or reinstated a charity, when and why (append-only)."""

    charity = models.ForeignKey(Charity, on_delete=models.PROTECT, related_name="status_changes")
    from_status = models.CharField(max_length=16, blank=True, default="")
    to_status = models.CharField(max_length=16, choices=Charity.Status.choices)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty: an operator command or the system.",
    )
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.charity} {self.from_status or '—'} → {self.to_status}"


class ReceiptSequence(models.Model):
    """The last receipt number given in a year. Locked FOR UPDATE by each donation, in the
    donation's own database transaction, so numbers are unique and a rolled-back donation
    gives its number back."""

    year = models.PositiveIntegerField(primary_key=True)
    last = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.year}: {self.last}"


class MatchingCampaign(models.Model):
    """A partner matches donations to a charity (or to every charity of a cause) within a
    window, at a ratio, up to a cap. The sponsor issues the matching points and pays them
    at settlement at its issuance price."""

    sponsor = models.ForeignKey(
        "partners.Partner", on_delete=models.PROTECT, related_name="matching_campaigns"
    )
    name = models.CharField(max_length=200)
    charity = models.ForeignKey(
        Charity, null=True, blank=True, on_delete=models.PROTECT, related_name="campaigns"
    )
    cause = models.CharField(
        max_length=64, blank=True, default="", help_text="Every charity of this cause."
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    ratio = models.DecimalField(
        max_digits=8, decimal_places=4, help_text="Matching points per donated point: 1, 2, 0.5…"
    )
    cap_points = models.PositiveBigIntegerField(help_text="Most points the campaign matches.")
    per_member_cap_points = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Most points matched for one member (empty: no limit)."
    )
    # Points matched so far, net of refunded donations. Only changed under this row's lock.
    matched_points = models.PositiveBigIntegerField(default=0)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-starts_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(charity__isnull=False) & Q(cause=""))
                | (Q(charity__isnull=True) & ~Q(cause="")),
                name="campaign_charity_xor_cause",
            ),
            models.CheckConstraint(
                condition=Q(ends_at__gt=models.F("starts_at")), name="campaign_window_forward"
            ),
            models.CheckConstraint(condition=Q(ratio__gt=0), name="campaign_ratio_positive"),
            models.CheckConstraint(
                condition=Q(matched_points__lte=models.F("cap_points")),
                name="campaign_cap_never_exceeded",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def remaining_points(self) -> int:
        return max(self.cap_points - self.matched_points, 0)


class Donation(models.Model):
    """Points a member gave to a charity: its receipt, its money value and its match."""

    class Source(models.TextChoices):
        MEMBER = "member", "Donation"
        ROUND_UP = "round_up", "Round-up on earn"
        EXPIRY = "expiry", "Instead of expiry"

    member = models.ForeignKey(
        "coalition.Member", on_delete=models.PROTECT, related_name="donations"
    )
    charity = models.ForeignKey(Charity, on_delete=models.PROTECT, related_name="donations")
    transaction = models.OneToOneField(
        "coalition.LedgerTransaction", on_delete=models.PROTECT, related_name="donation"
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.MEMBER)
    points = models.PositiveBigIntegerField()
    # Money value at the programme's donation price when it was given, rounded once.
    value = models.DecimalField(max_digits=18, decimal_places=4)
    currency = models.CharField(max_length=3)
    donation_price = models.DecimalField(max_digits=12, decimal_places=6)
    receipt_number = models.CharField(max_length=32, unique=True)
    campaign = models.ForeignKey(
        MatchingCampaign,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="donations",
    )
    matched_points = models.PositiveBigIntegerField(default=0)
    match_transaction = models.OneToOneField(
        "coalition.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="matched_donation",
    )
    created_at = models.DateTimeField(default=timezone.now)
    # When the receipt mail went out (issue 9): the mail job, dispatched at least once by
    # the outbox relay, sends it only while this is empty.
    receipt_emailed_at = models.DateTimeField(null=True, blank=True)
    # An operator refund (before disbursement): the reversing transactions and who did it.
    refunded_at = models.DateTimeField(null=True, blank=True)
    refunded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    refund_reason = models.TextField(blank=True, default="")
    refund_transaction = models.OneToOneField(
        "coalition.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="refunded_donation",
    )
    match_refund_transaction = models.OneToOneField(
        "coalition.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="refunded_match_donation",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(points__gt=0), name="donation_points_gt_0"),
            models.CheckConstraint(
                condition=Q(matched_points=0, campaign__isnull=True, match_transaction__isnull=True)
                | Q(matched_points__gt=0, campaign__isnull=False, match_transaction__isnull=False),
                name="donation_match_complete",
            ),
            models.CheckConstraint(
                condition=Q(refunded_at__isnull=True, refund_transaction__isnull=True)
                | Q(refunded_at__isnull=False, refund_transaction__isnull=False),
                name="donation_refund_complete",
            ),
        ]
        indexes = [
            models.Index(fields=["member", "-created_at", "-id"], name="donation_member_history"),
            models.Index(fields=["charity", "created_at"], name="donation_charity_time"),
            models.Index(fields=["campaign", "member"], name="donation_campaign_member"),
        ]

    def __str__(self) -> str:
        return f"{self.receipt_number} {self.points} points to {self.charity}"

    @property
    def is_refunded(self) -> bool:
        return self.refunded_at is not None


class GivingPreference(models.Model):
    """A member's automatic giving: a share of every earn, and points about to expire."""

    member = models.OneToOneField(
        "coalition.Member", on_delete=models.PROTECT, related_name="giving_preference"
    )
    round_up_charity = models.ForeignKey(
        Charity, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    round_up_percent = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Share of every earn given, 1–100 %."
    )
    expiry_charity = models.ForeignKey(
        Charity,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Points about to expire are given to it instead.",
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(round_up_charity__isnull=True, round_up_percent__isnull=True)
                | Q(
                    round_up_charity__isnull=False,
                    round_up_percent__gte=1,
                    round_up_percent__lte=100,
                ),
                name="giving_round_up_complete",
            ),
        ]
        indexes = [
            models.Index(
                fields=["member"],
                condition=Q(expiry_charity__isnull=False),
                name="giving_expiry_opted_in",
            ),
        ]

    def __str__(self) -> str:
        return f"giving of {self.member_id}"

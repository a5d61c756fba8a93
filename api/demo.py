"""The demo coalition: five brands, three charities, tiers, 500 members and three months of
realistic activity, all generated through the services (so the demo obeys every rule the
product does), then one settlement run completed through the Stripe emulator and one draft.

Deterministic (a fixed random seed) and idempotent: a second run adds nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from charity import services as charity_services
from charity.models import Charity
from coalition import services as ledger
from coalition.errors import CoalitionError
from coalition.models import LedgerTransaction, Member, Programme, Tier
from coalition.selectors import member_balance
from partners import services as partner_services
from partners.models import Partner, Promotion, Reward

DEMO_ADMIN = ("admin", "coalition-demo")
DEMO_FINANCE = (("finance", "finance-demo-1"), ("controller", "finance-demo-2"))
DEMO_MEMBER = ("demo@coalition.local", "demo-member-1")
MEMBERS = 500
DAYS = 90
SEED = 20261123


@dataclass
class Brand:
    code: str
    name: str
    category: str
    earn_rate: str
    issuance: str
    redemption: str
    basket: list[tuple[str, str, str]]  # sku, category, unit price
    excluded: list[str] = field(default_factory=list)
    stores: tuple[str, ...] = ("MAIN",)


BRANDS = [
    Brand(
        "FRESHMART", "FreshMart Groceries", "grocery", "1", "0.0100", "0.0080",
        [("milk-1l", "dairy", "1.29"), ("bread", "bakery", "2.49"), ("apples-1kg", "produce",
         "3.20"), ("cheddar", "dairy", "4.75"), ("coffee-beans", "pantry", "8.90"),
         ("gift-card-25", "gift card", "25.00"), ("cigarettes", "tobacco", "11.50")],
        excluded=["gift card", "tobacco"], stores=("DOWNTOWN", "HARBOR", "NORTHGATE"),
    ),
    Brand(
        "FUELGO", "FuelGo Stations", "fuel", "1", "0.0090", "0.0075",
        [("unleaded-l", "fuel", "1.62"), ("diesel-l", "fuel", "1.71"), ("car-wash", "service",
         "9.00"), ("snack-bar", "shop", "1.80")],
        stores=("I-5-EXIT-12", "RIVERSIDE"),
    ),
    Brand(
        "SKYWAYS", "Skyways Airlines", "airline", "2", "0.0120", "0.0100",
        [("fare-domestic", "fare", "189.00"), ("fare-intl", "fare", "642.00"),
         ("bag-fee", "ancillary", "35.00"), ("seat-upgrade", "ancillary", "59.00")],
        stores=("WEB", "APP"),
    ),
    Brand(
        "BEANERY", "The Beanery Coffee", "coffee", "3", "0.0080", "0.0060",
        [("latte", "drink", "4.60"), ("espresso", "drink", "2.90"), ("croissant", "food",
         "3.40"), ("mug", "merch", "14.00")],
        stores=("MARKET-ST", "CAMPUS", "AIRPORT"),
    ),
    Brand(
        "THREADLY", "Threadly Fashion Online", "fashion", "1.5", "0.0110", "0.0090",
        [("t-shirt", "apparel", "24.00"), ("jeans", "apparel", "79.00"), ("sneakers",
         "footwear", "110.00"), ("gift-card-50", "gift card", "50.00")],
        excluded=["gift card"], stores=("WEB",),
    ),
]  # fmt: skip

CHARITIES = [
    ("Green Canopy Trust", "US-501C3-20-1187342", "environment"),
    ("Open Books Literacy", "US-501C3-81-0042217", "education"),
    ("Full Plates Food Bank", "US-501C3-46-3390021", "hunger"),
]

REWARDS = {
    "FRESHMART": [("$5 off your shop", 700, None), ("Free bakery loaf", 300, 200)],
    "FUELGO": [("Free car wash", 900, 150), ("$10 fuel voucher", 1300, None)],
    "SKYWAYS": [("Lounge day pass", 4500, 40), ("Seat upgrade", 9000, 20)],
    "BEANERY": [("Free latte", 450, 500), ("Beanery mug", 1500, 60)],
    "THREADLY": [("$15 off an order", 1800, None), ("Tote bag", 1000, 80)],
}

FIRST_NAMES = (
    "Ava Ben Chloe Daniel Ella Farid Grace Hugo Isla Jonas Kira Liam Maya Noah Olivia Pablo "
    "Quinn Rosa Sam Tara Umar Vera Will Xena Yusuf Zoe Aiko Bram Chen Dara Emil Fatima Gil "
    "Hana Ivan Jude Kofi Lena Mateo Nia Omar Priya Ravi Sofia Theo Uma Vik Wren"
).split()
LAST_NAMES = (
    "Adams Baker Castillo Dubois Evans Fischer Garcia Huang Ito Jensen Kowalski Larsen Moreau "
    "Nakamura Okafor Patel Quinn Rossi Schmidt Tanaka Ueda Varga Walsh Xu Yilmaz Zimmermann"
).split()


@dataclass
class SeedReport:
    created: list[str] = field(default_factory=list)

    def add(self, count: int, what: str) -> None:
        if count:
            self.created.append(f"{count} {what}")

    def summary(self) -> str:
        return ", ".join(self.created) if self.created else "nothing new"


def seed(*, stdout=None, members: int = MEMBERS, days: int = DAYS) -> SeedReport:
    """Create the demo coalition unless it exists; returns what was created.

    Mail is not sent while seeding: 500 members' receipts and tier changes are not news.
    """
    from django.test.utils import override_settings

    demo_only()
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend"):
        return _seed(stdout=stdout, members=members, days=days)


class NotADemo(Exception):
    """The demo would be seeded where real money moves."""


def demo_only() -> None:
    """The demo creates users whose passwords are published (the README's) and executes a
    settlement run through the configured Stripe: only against the local emulator (a
    Stripe address on this machine), never a real programme's Stripe account."""
    from urllib.parse import urlsplit

    host = urlsplit(settings.STRIPE_API_BASE).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise NotADemo(
            f"seed_demo runs against the local Stripe emulator only, not {settings.STRIPE_API_BASE}"
            ": it creates users with published passwords and moves settlement money"
        )


def _seed(*, stdout, members: int, days: int) -> SeedReport:
    report = SeedReport()
    users = _users(report)
    if Partner.objects.filter(code=BRANDS[0].code).exists():
        _ensure_stripe_objects(report)
        _settle(users, report, stdout)
        return report
    rng = random.Random(SEED)
    now = timezone.now()
    start = (now - timedelta(days=days)).replace(hour=8, minute=0, second=0, microsecond=0)
    with transaction.atomic():
        _programme(report)
        partners = _partners(report, start)
        charities = _charities(users["admin"], report)
        _campaign(partners["THREADLY"], start, now)
        people = _members(rng, partners, start, members, report)
        _giving_preferences(rng, people, charities, start)
        _activity(rng, people, partners, charities, start, now, report, stdout)
    _ensure_stripe_objects(report)
    _settle(users, report, stdout)
    return report


# --------------------------------------------------------------------------- catalogue


def _users(report: SeedReport) -> dict[str, object]:
    user_model = get_user_model()
    users = {}
    admin = user_model.objects.filter(username=DEMO_ADMIN[0]).first()
    if admin is None:
        admin = user_model.objects.create_superuser(DEMO_ADMIN[0], password=DEMO_ADMIN[1])
        report.add(1, "admin")
    users["admin"] = admin
    from django.contrib.auth.models import Group, Permission

    finance_group, _ = Group.objects.get_or_create(name="finance")
    finance_group.permissions.set(
        Permission.objects.filter(content_type__app_label__in=["settlement", "api"])
    )
    for username, password in DEMO_FINANCE:
        user = user_model.objects.filter(username=username).first()
        if user is None:
            user = user_model.objects.create_user(username, password=password, is_staff=True)
            report.add(1, f"finance user {username}")
        user.groups.add(finance_group)
        users[username] = user
    return users


def _programme(report: SeedReport) -> Programme:
    programme = ledger.programme_get()
    programme.name = "Coalition Rewards"
    programme.currency = "USD"
    programme.expiry_policy = Programme.ExpiryPolicy.FIXED
    programme.expiry_months = 12
    programme.expire_at_month_end = True
    programme.min_redemption_points = 100
    programme.min_donation_points = 100
    programme.welcome_bonus_points = 100
    programme.referral_bonus_points = 250
    programme.birthday_bonus_points = 200
    programme.daily_burn_limit = 50_000
    programme.save()
    for code, name, threshold, multiplier in (
        ("BASE", "Member", 0, "1"),
        ("SILVER", "Silver", 2_000, "1.25"),
        ("GOLD", "Gold", 6_000, "1.5"),
    ):
        Tier.objects.get_or_create(
            code=code,
            defaults={
                "name": name,
                "qualifying_points": threshold,
                "earn_multiplier": Decimal(multiplier),
            },
        )
    report.add(3, "tiers")
    return programme


def _partners(report: SeedReport, start: datetime) -> dict[str, Partner]:
    partners = {}
    for brand in BRANDS:
        partner, _key = partner_services.partner_create(
            code=brand.code,
            name=brand.name,
            currency="USD",
            earn_rate=brand.earn_rate,
            issuance_price=brand.issuance,
            redemption_price=brand.redemption,
            contact_email=f"loyalty@{brand.code.lower()}.example",
        )
        partner.excluded_categories = brand.excluded
        partner.save(update_fields=["excluded_categories"])
        for store in brand.stores:
            partner_services.store_create(partner=partner, code=store, name=store.title())
        for name, cost, stock in REWARDS[brand.code]:
            Reward.objects.create(partner=partner, name=name, points_cost=cost, stock=stock)
        partners[brand.code] = partner
    window = {"starts_at": start, "ends_at": start + timedelta(days=365)}
    Promotion.objects.create(
        partner=partners["FRESHMART"],
        name="Double points on dairy",
        kind="multiplier",
        multiplier=Decimal("2"),
        categories=["dairy"],
        **window,
    )
    Promotion.objects.create(
        partner=partners["BEANERY"],
        name="Morning coffee bonus",
        kind="fixed_bonus",
        bonus_points=25,
        budget_points=40_000,
        per_member_limit=20,
        **window,
    )
    Promotion.objects.create(
        partner=partners["SKYWAYS"],
        name="First flight bonus",
        kind="fixed_bonus",
        bonus_points=500,
        first_purchase_only=True,
        **window,
    )
    Promotion.objects.create(
        partner=None, name="Two brands in a month", kind="cross_brand", bonus_points=150,
        budget_points=200_000, **window,
    )  # fmt: skip
    report.add(len(partners), "partners")
    report.add(4, "promotions")
    return partners


def _charities(admin, report: SeedReport) -> list[Charity]:
    charities = []
    for name, registration, cause in CHARITIES:
        charities.append(
            charity_services.charity_create(
                name=name,
                registration_number=registration,
                cause=cause,
                country="US",
                description=f"{name} — a verified {cause} nonprofit.",
                status=Charity.Status.VERIFIED,
                changed_by=admin,
                reason="demo: vouched for by the operator",
            )
        )
    report.add(len(charities), "charities")
    return charities


def _campaign(sponsor: Partner, start: datetime, now: datetime) -> None:
    charity_services.campaign_create(
        sponsor=sponsor,
        name="Threadly matches every green point",
        starts_at=start,
        ends_at=now + timedelta(days=90),
        ratio="1",
        cap_points=60_000,
        cause="environment",
        per_member_cap_points=2_000,
    )


# --------------------------------------------------------------------------- members


@dataclass
class Person:
    member: Member
    home: list[str]  # brand codes they shop at
    rate: float  # purchases per day


def _members(rng, partners, start, count, report) -> list[Person]:
    people: list[Person] = []
    codes = list(partners)
    for index in range(count):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = DEMO_MEMBER[0] if index == 0 else f"{first}.{last}.{index}@example.com".lower()
        referrer = (
            people[rng.randrange(len(people))].member if people and rng.random() < 0.12 else None
        )
        joined = start + timedelta(days=rng.randint(0, 20), hours=rng.randint(0, 10))
        # One member in ten joined about a year ago: their first points (12-month lifetime,
        # to the end of the month) lapse during the three months shown, so expiry — and
        # giving instead of expiry — happen in the demo too.
        veteran = index % 10 == 3
        if veteran:
            joined = start - timedelta(days=365 - rng.randint(5, 75), hours=rng.randint(0, 10))
        member = ledger.member_create(
            email=email,
            display_name=f"{first} {last}" if index else "Demo Member",
            # Only the demo member can log in: hashing 500 passwords would slow the seed.
            password=DEMO_MEMBER[1] if index == 0 else None,
            birth_date=_birth_date(rng, joined),
            referred_by=referrer,
            now=joined,
        )
        enrolled_at = partners[rng.choice(codes)]
        Member.objects.filter(pk=member.pk).update(enrolled_by=enrolled_at)
        ledger.points_earn(
            caller="system:welcome",
            idempotency_key=f"welcome:{member.pk}",
            member=member,
            operator_points=100,
            kind=LedgerTransaction.Kind.BONUS,
            reference="welcome bonus",
            metadata={"breakdown": [{"kind": "bonus", "label": "Welcome bonus",
                                     "points": 100, "fundedBy": "operator"}]},
            now=joined,
        )  # fmt: skip
        home = rng.sample(codes, k=rng.choice([1, 2, 2, 3, 3, 4]))
        if index == 0:
            home = ["FRESHMART", "BEANERY", "SKYWAYS"]
        if veteran:
            _first_purchase(rng, member, partners[home[0]], joined + timedelta(days=1))
        people.append(Person(member, home, rate=rng.uniform(0.02, 0.12)))
    report.add(len(people), "members")
    return people


def _first_purchase(rng, member: Member, partner: Partner, at: datetime) -> None:
    brand = next(brand for brand in BRANDS if brand.code == partner.code)
    items, amount = _basket(rng, brand)
    partner_services.purchase_record(
        partner=partner,
        idempotency_key=f"demo-first:{member.pk}",
        member_number=member.member_number,
        amount=amount,
        currency="USD",
        reference=f"{partner.code[:3]}-{rng.randint(100000, 999999)}",
        line_items=items,
        occurred_at=at,
        now=at,
    )


def _birth_date(rng, joined: datetime):
    if rng.random() < 0.3:
        return None
    return (joined - timedelta(days=rng.randint(18 * 365, 75 * 365))).date()


def _giving_preferences(rng, people, charities, start) -> None:
    for person in people:
        roll = rng.random()
        if roll < 0.08:
            charity_services.giving_preferences_update(
                member=person.member,
                round_up_charity=rng.choice(charities),
                round_up_percent=rng.choice([5, 10, 20]),
                now=start,
            )
        elif roll < 0.13:
            charity_services.giving_preferences_update(
                member=person.member, expiry_charity=rng.choice(charities), now=start
            )


# --------------------------------------------------------------------------- activity


def _basket(rng, brand: Brand) -> tuple[list[dict], Decimal]:
    items = []
    for sku, category, price in rng.sample(
        brand.basket, k=rng.randint(1, min(3, len(brand.basket)))
    ):
        quantity = rng.randint(1, 30) if category == "fuel" else rng.randint(1, 3)
        items.append({"sku": sku, "category": category, "quantity": quantity,
                      "unit_price": Decimal(price)})  # fmt: skip
    return items, sum((item["unit_price"] * item["quantity"] for item in items), Decimal(0))


def _activity(rng, people, partners, charities, start, now, report, stdout) -> None:
    """Day by day: purchases, redemptions at other brands, holds, refunds, donations,
    reward redemptions, and the nightly jobs (expiry, hold expiry, tiers, birthdays)."""
    brands = {brand.code: brand for brand in BRANDS}
    counts = {"purchases": 0, "redemptions": 0, "holds": 0, "refunds": 0, "donations": 0,
              "rewards": 0, "skipped": 0}  # fmt: skip
    recent_purchases: list[LedgerTransaction] = []
    for day in range((now - start).days + 1):
        moment = start + timedelta(days=day)
        for person in people:
            if person.member.created_at > moment + timedelta(hours=12):
                continue
            if rng.random() < person.rate:
                code = rng.choice(person.home) if rng.random() < 0.85 else rng.choice(list(brands))
                at = _at(rng, moment, now)
                items, amount = _basket(rng, brands[code])
                try:
                    result = partner_services.purchase_record(
                        partner=partners[code],
                        idempotency_key=f"demo:{person.member.pk}:{day}:{counts['purchases']}",
                        member_number=person.member.member_number,
                        amount=amount,
                        currency="USD",
                        reference=f"{code[:3]}-{rng.randint(100000, 999999)}",
                        store_code=rng.choice(brands[code].stores),
                        line_items=items,
                        occurred_at=at,
                        now=at,
                    )
                except CoalitionError:
                    continue
                counts["purchases"] += 1
                if result.transaction is not None:
                    recent_purchases.append(result.transaction)
            if rng.random() < person.rate / 6:
                counts[_spend(rng, person, partners, charities, _at(rng, moment, now))] += 1
        if recent_purchases and rng.random() < 0.6:
            refund = recent_purchases.pop(rng.randrange(len(recent_purchases)))
            at = _at(rng, moment, now)
            try:
                partner_services.partner_transaction_reverse(
                    partner=refund.partner,
                    idempotency_key=f"demo-refund:{refund.pk}",
                    transaction_id=refund.pk,
                    points=max(1, refund.member_points // rng.choice([1, 2])),
                    reason="customer returned goods",
                    now=max(at, refund.created_at + timedelta(minutes=5)),
                )
                counts["refunds"] += 1
            except CoalitionError:
                pass
        recent_purchases = recent_purchases[-200:]
        _nightly(moment + timedelta(hours=23, minutes=30), now)
        if stdout and day % 15 == 0:
            stdout.write(
                f"  seeding day {day}/{(now - start).days}: {counts['purchases']} purchases"
            )
    counts.pop("skipped")
    for what, count in counts.items():
        report.add(count, what)


def _at(rng, moment: datetime, now: datetime) -> datetime:
    at = moment + timedelta(hours=rng.randint(0, 13), minutes=rng.randint(0, 59))
    return min(at, now - timedelta(minutes=1))


def _spend(rng, person, partners, charities, at) -> str:
    """A redemption at another brand, a hold, a reward or a donation."""
    member = person.member
    spendable = member_balance(member=member).spendable
    if spendable < 300:
        return "skipped"
    roll = rng.random()
    partner = partners[rng.choice(list(partners))]
    key = f"demo-spend:{member.pk}:{at.isoformat()}"
    till = f"till-{rng.randint(1, 99)}"
    try:
        if roll < 0.45:
            partner_services.points_redeem(
                partner=partner, idempotency_key=key, member_number=member.member_number,
                points=rng.randint(100, min(spendable, 3000)), reference=till, now=at,
            )  # fmt: skip
            return "redemptions"
        if roll < 0.65:
            hold = partner_services.redemption_authorize(
                partner=partner, idempotency_key=key, member_number=member.member_number,
                points=rng.randint(100, min(spendable, 2000)), reference=till, now=at,
            )  # fmt: skip
            later = at + timedelta(minutes=rng.randint(1, 20))
            if rng.random() < 0.75:
                partner_services.redemption_capture(
                    partner=partner, idempotency_key=key + ":capture", hold_id=hold.pk,
                    points=hold.points if rng.random() < 0.7 else max(1, hold.points // 2),
                    now=later,
                )  # fmt: skip
            else:
                partner_services.redemption_void(
                    partner=partner, idempotency_key=key + ":void", hold_id=hold.pk, now=later
                )
            return "holds"
        if roll < 0.85:
            charity_services.donation_create(
                member=member, charity=rng.choice(charities),
                points=rng.randint(100, min(spendable, 1500)), idempotency_key=key, now=at,
            )  # fmt: skip
            return "donations"
        from partners.selectors import rewards_available

        affordable = [r for r in rewards_available(now=at) if r.points_cost <= spendable]
        if not affordable:
            return "skipped"
        partner_services.reward_redeem(
            member=member, reward_id=rng.choice(affordable).pk, idempotency_key=key, now=at
        )
        return "rewards"
    except CoalitionError:
        return "skipped"


def _nightly(at: datetime, now: datetime) -> None:
    if at > now:
        return
    charity_services.expiring_points_donate(now=at)
    ledger.points_expire_due(now=at)
    ledger.holds_expire_due(now=at)


# --------------------------------------------------------------------------- money


def _ensure_stripe_objects(report: SeedReport) -> None:
    """Give every partner and charity a connected account (and partners a customer with a
    card) in the Stripe emulator. The emulator starts empty each time, so objects missing
    there are created again."""
    from settlement import stripe_gateway as gateway

    made = 0
    for partner in Partner.objects.all():
        if not partner.stripe_account_id or not gateway.account_exists(partner.stripe_account_id):
            partner.stripe_account_id = gateway.connected_account_create(
                email=partner.contact_email or f"{partner.code.lower()}@example.com",
                business_name=partner.name,
            )
            made += 1
        if not partner.stripe_customer_id or not gateway.customer_exists(
            partner.stripe_customer_id
        ):
            partner.stripe_customer_id = gateway.customer_create_with_card(
                email=partner.contact_email or f"{partner.code.lower()}@example.com",
                name=partner.name,
            )
        partner.save(update_fields=["stripe_account_id", "stripe_customer_id"])
    for charity in Charity.objects.all():
        if not charity.stripe_account_id or not gateway.account_exists(charity.stripe_account_id):
            charity.stripe_account_id = gateway.connected_account_create(
                email=f"donations@{charity.registration_number.lower()}.example",
                business_name=charity.name,
            )
            charity.save(update_fields=["stripe_account_id"])
            made += 1
    report.add(made, "Stripe connected accounts")


def _settle(users, report: SeedReport, stdout) -> None:
    """One run completed through the emulator (last month), one draft (this month so far)."""
    from settlement import services as settlement_services
    from settlement.models import SettlementRun

    if SettlementRun.objects.exists():
        return
    now = timezone.now()
    month_start = timezone.make_aware(datetime.combine(now.date().replace(day=1), time()))
    first_end = month_start if (now - month_start).days >= 3 else month_start - timedelta(days=30)
    run = settlement_services.run_create(period_end=first_end, created_by=users["finance"])
    run = settlement_services.run_approve(run=run, approved_by=users["controller"])
    run = settlement_services.run_execute(run=run, started_by=users["finance"])
    run.refresh_from_db()
    draft = settlement_services.run_create(
        period_end=now.replace(hour=0, minute=0, second=0, microsecond=0),
        created_by=users["finance"],
    )
    report.add(1, f"settlement run {run.status}")
    report.add(1, f"settlement run {draft.status}")

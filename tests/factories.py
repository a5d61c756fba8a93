"""factory_boy factories and helpers that build through the services."""

import os
import subprocess
import sys
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import factory

from charity.models import Charity
from coalition import services
from partners.models import Partner

PROJECT = Path(__file__).resolve().parents[1]


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Partner

    code = factory.Sequence(lambda n: f"P{n:04d}")
    name = factory.Sequence(lambda n: f"Partner {n}")
    currency = "USD"
    earn_rate = Decimal("1")


class CharityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Charity

    name = factory.Sequence(lambda n: f"Charity {n}")
    registration_number = factory.Sequence(lambda n: f"REG-{n:05d}")
    cause = "environment"
    status = Charity.Status.VERIFIED


_member_seq = iter(range(1, 10**9))


def member(**kwargs):
    """A member enrolled through the service (so it has a wallet)."""
    n = next(_member_seq)
    kwargs.setdefault("email", f"member{n}@example.com")
    kwargs.setdefault("display_name", f"Member {n}")
    return services.member_create(**kwargs)


_key_seq = iter(range(1, 10**12))


def key(prefix: str = "k") -> str:
    """A fresh idempotency key."""
    return f"{prefix}-{next(_key_seq)}"


def earn(member, partner, points, **kwargs):
    kwargs.setdefault("caller", f"partner:{partner.pk}")
    kwargs.setdefault("idempotency_key", key("earn"))
    return services.points_earn(member=member, partner=partner, partner_points=points, **kwargs)


def burn(member, partner, points, **kwargs):
    kwargs.setdefault("caller", f"partner:{partner.pk}")
    kwargs.setdefault("idempotency_key", key("burn"))
    return services.points_burn(member=member, partner=partner, points=points, **kwargs)


def donate(member, charity, points, **kwargs):
    kwargs.setdefault("caller", f"member:{member.pk}")
    kwargs.setdefault("idempotency_key", key("donate"))
    return services.points_donate(member=member, charity=charity, points=points, **kwargs)


def hold(member, partner, points, **kwargs):
    kwargs.setdefault("caller", f"partner:{partner.pk}")
    kwargs.setdefault("idempotency_key", key("hold"))
    return services.hold_authorize(member=member, partner=partner, points=points, **kwargs)


def capture(hold, points=None, **kwargs):
    kwargs.setdefault("caller", f"partner:{hold.partner_id}")
    kwargs.setdefault("idempotency_key", key("capture"))
    return services.hold_capture(hold=hold, points=points, **kwargs)


def void(hold, **kwargs):
    kwargs.setdefault("caller", f"partner:{hold.partner_id}")
    kwargs.setdefault("idempotency_key", key("void"))
    return services.hold_void(hold=hold, **kwargs)


def reverse(transaction, points=None, **kwargs):
    kwargs.setdefault("caller", f"partner:{transaction.partner_id}")
    kwargs.setdefault("idempotency_key", key("reverse"))
    return services.transaction_reverse(transaction_to_reverse=transaction, points=points, **kwargs)


def ledger_state() -> dict:
    """Everything a ledger write can change, to assert that a refusal wrote nothing."""
    from coalition.models import (
        Account,
        AdjustmentNote,
        Entry,
        IdempotencyRecord,
        LedgerTransaction,
        Member,
        PointLot,
        RedemptionHold,
    )

    return {
        "transactions": list(LedgerTransaction.objects.order_by("id").values_list("id", flat=True)),
        "entries": Entry.objects.count(),
        "accounts": list(
            Account.objects.order_by("id").values_list("id", "balance", "held", "last_activity_at")
        ),
        "lots": list(PointLot.objects.order_by("id").values_list("id", "remaining")),
        "holds": list(
            RedemptionHold.objects.order_by("id").values_list("id", "status", "captured_points")
        ),
        "idempotency_records": IdempotencyRecord.objects.count(),
        "adjustment_notes": AdjustmentNote.objects.count(),
        "members": list(Member.objects.order_by("id").values_list("id", "status", "email")),
    }


def wallet(member):
    """The member's wallet as stored now (balance, held, last activity)."""
    from coalition.models import Account

    return Account.objects.get(member_id=member.pk)


def run_concurrently(count: int, work, *, timeout: float = 60.0) -> list:
    """Run `work(index)` in `count` threads started together, each on its own database
    connection. Returns one ("ok", result) or ("error", exception) per thread, in order."""
    import threading

    from django.db import connection

    start = threading.Barrier(count, timeout=timeout)
    outcomes: list = [None] * count

    def run(index: int) -> None:
        try:
            start.wait()
            outcomes[index] = ("ok", work(index))
        except Exception as exc:  # noqa: BLE001 - handed to the test, which asserts on it
            outcomes[index] = ("error", exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish in time"
    return outcomes


@contextmanager
def callers_own_transaction():
    """The default connection taken out of autocommit, as a caller that manages its own
    transaction does: committed if the block ends normally, rolled back if it raises."""
    from django.db import transaction

    transaction.set_autocommit(False)
    try:
        yield
        transaction.commit()
    except BaseException:
        transaction.rollback()
        raise
    finally:
        transaction.set_autocommit(True)


def assert_refused(code, call, *, field=None):
    """Call `call()`, expect a CoalitionError with `code` (and `field`), and nothing written."""
    import pytest

    from coalition.errors import CoalitionError

    before = ledger_state()
    with pytest.raises(CoalitionError) as refused:
        call()
    assert refused.value.code == code, str(refused.value)
    if field is not None:
        assert refused.value.field == field, str(refused.value)
    assert ledger_state() == before, "a refused request wrote to the database"
    return refused.value


# --------------------------------------------------------------------------- partners


_partner_code_seq = iter(range(1, 10**9))


def onboarded_partner(**kwargs):
    """A partner onboarded through `partner_create`: first terms (issuance 0.0100, redemption
    0.0080 per point unless given) and an API key. Returns (partner, raw API key)."""
    from partners.services import partner_create

    n = next(_partner_code_seq)
    kwargs.setdefault("code", f"BRAND{n:04d}")
    kwargs.setdefault("name", f"Brand {n}")
    kwargs.setdefault("currency", "USD")
    kwargs.setdefault("earn_rate", "1")
    kwargs.setdefault("issuance_price", "0.0100")
    kwargs.setdefault("redemption_price", "0.0080")
    return partner_create(**kwargs)


def promotion(**kwargs):
    """A promotion in force from a day before `around` (default now) to 30 days after."""
    from datetime import timedelta

    from django.utils import timezone

    from partners.models import Promotion

    around = kwargs.pop("around", None) or timezone.now()
    tiers = kwargs.pop("tiers", [])
    kwargs.setdefault("name", f"Promotion {next(_partner_code_seq)}")
    kwargs.setdefault("kind", Promotion.Kind.MULTIPLIER)
    kwargs.setdefault("starts_at", around - timedelta(days=1))
    kwargs.setdefault("ends_at", around + timedelta(days=30))
    created = Promotion.objects.create(**kwargs)
    if tiers:
        created.tiers.set(tiers)
    return created


def reward(partner, **kwargs):
    from partners.models import Reward

    kwargs.setdefault("name", f"Reward {next(_partner_code_seq)}")
    kwargs.setdefault("points_cost", 100)
    return Reward.objects.create(partner=partner, **kwargs)


def purchase(partner, member, amount, **kwargs):
    """Record a purchase through `purchase_record` (a fresh idempotency key unless given)."""
    from partners.services import purchase_record

    kwargs.setdefault("idempotency_key", key("purchase"))
    kwargs.setdefault("currency", partner.currency)
    kwargs.setdefault("reference", f"receipt-{kwargs['idempotency_key']}")
    return purchase_record(
        partner=partner, member_number=member.member_number, amount=amount, **kwargs
    )


def partner_state() -> dict:
    """What partner-side writes can change, to assert that a refusal wrote nothing there."""
    from partners.models import (
        ApiKey,
        CommercialTerms,
        Partner,
        Promotion,
        PromotionAward,
        ReferralReward,
        Reward,
        RewardRedemption,
        Store,
    )

    return {
        "partners": list(Partner.objects.order_by("id").values_list("id", "code", "status")),
        "terms": list(CommercialTerms.objects.order_by("id").values_list("id", flat=True)),
        "keys": list(ApiKey.objects.order_by("id").values_list("id", "revoked_at")),
        "stores": Store.objects.count(),
        "promotions": list(Promotion.objects.order_by("id").values_list("id", "awarded_points")),
        "awards": PromotionAward.objects.count(),
        "referral_rewards": ReferralReward.objects.count(),
        "rewards": list(Reward.objects.order_by("id").values_list("id", "stock")),
        "reward_redemptions": RewardRedemption.objects.count(),
    }


def assert_refused_all(code, call, *, field=None):
    """Like `assert_refused`, and nothing written on the partner side either (terms, keys,
    promotions and their counters, awards, rewards and stock)."""
    before = partner_state()
    error = assert_refused(code, call, field=field)
    assert partner_state() == before, "a refused request wrote partner data"
    return error


# --------------------------------------------------------------------------- charity (issue 6)


def give(member, charity, points, **kwargs):
    """A donation through the charity service (receipt, value, match)."""
    from charity.services import donation_create

    kwargs.setdefault("idempotency_key", key("give"))
    return donation_create(member=member, charity=charity, points=points, **kwargs)


def campaign(sponsor, *, charity=None, cause=None, ratio="1", cap_points=1000, **kwargs):
    """A matching campaign open now (for a week either side), through the service."""
    from datetime import timedelta

    from django.utils import timezone

    from charity.services import campaign_create

    now = timezone.now()
    kwargs.setdefault("name", f"Campaign {next(_key_seq)}")
    kwargs.setdefault("starts_at", now - timedelta(days=7))
    kwargs.setdefault("ends_at", now + timedelta(days=7))
    return campaign_create(
        sponsor=sponsor, charity=charity, cause=cause, ratio=ratio, cap_points=cap_points, **kwargs
    )


def charity_state() -> dict:
    """Everything a charity write can change, with the ledger, to assert nothing was written."""
    from charity.models import (
        Charity,
        CharityStatusChange,
        Donation,
        GivingPreference,
        MatchingCampaign,
        ReceiptSequence,
    )

    return {
        **ledger_state(),
        "donations": list(Donation.objects.order_by("id").values_list("id", "refunded_at")),
        "receipts": list(ReceiptSequence.objects.order_by("year").values_list("year", "last")),
        "campaigns": list(
            MatchingCampaign.objects.order_by("id").values_list("id", "matched_points")
        ),
        "charities": list(Charity.objects.order_by("id").values_list("id", "status")),
        "status_changes": CharityStatusChange.objects.count(),
        "giving": list(
            GivingPreference.objects.order_by("id").values_list(
                "id", "round_up_charity", "round_up_percent", "expiry_charity"
            )
        ),
    }


def assert_charity_refused(code, call, *, field=None):
    """Like assert_refused, also asserting no charity row changed."""
    import pytest

    from coalition.errors import CoalitionError

    before = charity_state()
    with pytest.raises(CoalitionError) as refused:
        call()
    assert refused.value.code == code, str(refused.value)
    if field is not None:
        assert refused.value.field == field, str(refused.value)
    assert charity_state() == before, "a refused request wrote to the database"
    return refused.value


def finance_staff(username: str, *, password: str = "x-Str0ng-pass", **extra):
    """An active staff user in the `finance` group (view the runs and the liability, create,
    execute and approve them), as `manage.py create_staff_token` sets one up."""
    from django.contrib.auth import get_user_model

    from api.management.commands.create_staff_token import finance_group

    user = get_user_model().objects.create_user(
        username=username, password=password, is_staff=True, **extra
    )
    user.groups.add(finance_group())
    return user


def manage_process(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`manage.py ARGS` as an operator runs it: a process of its own in the project folder
    with ``env`` as its whole environment, its output captured as text. A failure is in
    its result (returncode, stderr), not raised."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def sqlite_process_env(database: Path) -> dict[str, str]:
    """The environment of a `manage.py` process on its own SQLite database ``database``,
    with the test settings and no broker."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
    }
    env.pop("CELERY_BROKER_URL", None)
    return env

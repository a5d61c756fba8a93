"""factory_boy factories and helpers that build through the services."""

from decimal import Decimal

import factory

from charity.models import Charity
from coalition import services
from partners.models import Partner


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

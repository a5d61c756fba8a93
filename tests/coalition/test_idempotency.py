"""Idempotency keys: a retry returns the first result, another payload under the same key is
refused, keys are scoped per caller, and racing retries on PostgreSQL write exactly once."""

from types import SimpleNamespace

import pytest

from coalition import selectors, services
from coalition.errors import ErrorCode
from coalition.models import IdempotencyRecord, LedgerTransaction, RedemptionHold
from tests import factories


@pytest.fixture
def ctx(member, partner, charity, staff_user):
    """A member with 1000 points, one earn to reverse and two active holds of 100."""
    earn = factories.earn(member, partner, 1000)
    return SimpleNamespace(
        member=member,
        partner=partner,
        charity=charity,
        staff=staff_user,
        earn=earn,
        hold=factories.hold(member, partner, 100),
        other_hold=factories.hold(member, partner, 100),
    )


def _points(other: bool) -> int:
    return 11 if other else 10


# Each write, called with an idempotency key; `other=True` sends a different payload.
OPERATIONS = {
    "earn": lambda c, key, other=False: factories.earn(
        c.member, c.partner, _points(other), idempotency_key=key
    ),
    "burn": lambda c, key, other=False: factories.burn(
        c.member, c.partner, _points(other), idempotency_key=key
    ),
    "donate": lambda c, key, other=False: factories.donate(
        c.member, c.charity, _points(other), idempotency_key=key
    ),
    "hold": lambda c, key, other=False: factories.hold(
        c.member, c.partner, _points(other), idempotency_key=key
    ),
    "capture": lambda c, key, other=False: factories.capture(
        c.hold, 60 if other else None, idempotency_key=key
    ),
    "void": lambda c, key, other=False: factories.void(
        c.other_hold if other else c.hold, idempotency_key=key
    ),
    "reverse": lambda c, key, other=False: factories.reverse(
        c.earn, _points(other), idempotency_key=key
    ),
    "adjust": lambda c, key, other=False: services.points_adjust(
        staff_user=c.staff,
        member=c.member,
        points=_points(other),
        reason="goodwill",
        idempotency_key=key,
    ),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_retry_with_the_same_key_and_payload_returns_the_first_result(ctx, operation):
    # Given a write that succeeded under key K
    first = OPERATIONS[operation](ctx, "K")
    before = factories.ledger_state()

    # When the caller retries it with the same key and payload
    again = OPERATIONS[operation](ctx, "K")

    # Then it gets the same result back and nothing more is written
    assert type(again) is type(first)
    assert again.pk == first.pk
    assert factories.ledger_state() == before
    assert selectors.ledger_check().ok


@pytest.mark.parametrize("operation", OPERATIONS)
def test_the_same_key_with_another_payload_is_a_conflict(ctx, operation):
    # Given a write that succeeded under key K
    OPERATIONS[operation](ctx, "K")

    # When the same caller sends a different request under K
    # Then it is refused with IDEMPOTENCY_CONFLICT on the key, and nothing is written
    factories.assert_refused(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        lambda: OPERATIONS[operation](ctx, "K", other=True),
        field="idempotencyKey",
    )


def test_a_key_used_for_an_earn_cannot_be_reused_for_a_burn(ctx):
    # Given an earn booked under "order-1"
    factories.earn(ctx.member, ctx.partner, 10, idempotency_key="order-1")

    # When the same partner burns under "order-1"
    # Then it is a conflict, not a second write
    factories.assert_refused(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        lambda: factories.burn(ctx.member, ctx.partner, 10, idempotency_key="order-1"),
    )


def test_a_retry_replays_even_when_the_request_would_now_be_refused(ctx):
    # Given a burn of 100 under key K, after which the member spent everything and was suspended
    first = factories.burn(ctx.member, ctx.partner, 100, idempotency_key="K")
    factories.burn(ctx.member, ctx.partner, selectors.member_balance(member=ctx.member).spendable)
    services.member_set_status(member=ctx.member, status="suspended")
    before = factories.ledger_state()

    # When the till retries the first burn (its response was lost)
    again = factories.burn(ctx.member, ctx.partner, 100, idempotency_key="K")

    # Then it gets the original burn, not an error, and nothing is written
    assert again.pk == first.pk
    assert factories.ledger_state() == before


def test_keys_are_scoped_per_caller(member, partner, other_partner):
    # Given two partners whose tills both use "order-1"
    # When each records a purchase and authorises a hold under that key
    first = factories.earn(member, partner, 100, idempotency_key="order-1")
    second = factories.earn(member, other_partner, 100, idempotency_key="order-1")
    first_hold = factories.hold(member, partner, 10, idempotency_key="till-1")
    second_hold = factories.hold(member, other_partner, 10, idempotency_key="till-1")

    # Then both writes of each pair succeed as separate results
    assert first.pk != second.pk
    assert first_hold.pk != second_hold.pk
    assert selectors.member_balance(member=member) == selectors.Balance(
        balance=200, held=20, spendable=180
    )
    assert selectors.ledger_check().ok


def test_no_key_means_no_deduplication(member, partner):
    # Given an internal earn without an idempotency key
    # When it is called twice
    for _ in range(2):
        services.points_earn(
            caller="system:test", idempotency_key=None, member=member, operator_points=10
        )

    # Then both are booked
    assert selectors.member_balance(member=member).balance == 20


# --------------------------------------------------------------------------- racing retries

CONCURRENT = 8


def _written(ctx, operation: str) -> int:
    """How many rows the keyed write "K" left behind."""
    if operation == "hold":
        return RedemptionHold.objects.filter(idempotency_key="K").count()
    if operation == "void":
        return IdempotencyRecord.objects.filter(idempotency_key="K").count()
    return LedgerTransaction.objects.filter(idempotency_key="K").count()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_racing_retries_with_one_key_write_once_and_all_get_the_same_result(ctx, operation):
    # Given a caller that sends the same request 8 times at once (a till retrying on timeouts),
    # each on its own database connection
    before = selectors.member_balance(member=ctx.member)

    # When they race
    outcomes = factories.run_concurrently(
        CONCURRENT, lambda _index: OPERATIONS[operation](ctx, "K")
    )

    # Then every caller succeeds with the same result, and it was written once
    errors = [value for status, value in outcomes if status == "error"]
    assert errors == []
    assert len({value.pk for _, value in outcomes}) == 1
    assert _written(ctx, operation) == 1
    after = selectors.member_balance(member=ctx.member)
    expected_change = {
        "earn": (10, 0),
        "burn": (-10, 0),
        "donate": (-10, 0),
        "hold": (0, 10),
        "capture": (-100, -100),
        "void": (0, -100),
        "reverse": (-10, 0),
        "adjust": (10, 0),
    }[operation]
    assert (after.balance - before.balance, after.held - before.held) == expected_change
    assert selectors.ledger_check().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_different_requests_under_one_key_one_wins_the_others_conflict(programme, partner):
    # Given 8 members, and a buggy till that sends an earn for each under the same key
    members = [factories.member() for _ in range(CONCURRENT)]
    factories.earn(members[0], partner, 1)  # the partner's issued account exists
    caller = f"partner:{partner.pk}"

    # When the 8 different requests race
    outcomes = factories.run_concurrently(
        CONCURRENT,
        lambda index: factories.earn(
            members[index], partner, 100, idempotency_key="shared", caller=caller
        ),
    )

    # Then exactly one is booked, and every other caller gets IDEMPOTENCY_CONFLICT
    succeeded = [value for status, value in outcomes if status == "ok"]
    refused = [value for status, value in outcomes if status == "error"]
    assert len(succeeded) == 1
    assert [error.code for error in refused] == [ErrorCode.IDEMPOTENCY_CONFLICT] * (CONCURRENT - 1)
    assert LedgerTransaction.objects.filter(idempotency_key="shared").count() == 1
    balances = [selectors.member_balance(member=m).balance for m in members]
    assert sum(balances) == 1 + 100
    assert selectors.ledger_check().ok


# A key is unique per caller across every kind of write (DESIGN): transactions, holds and
# the writes recorded in coalition_idempotency. Pairs of one partner's writes that land in
# different tables, chosen so that the second write is valid in itself.
ACROSS_KINDS = [
    ("hold", "earn"),
    ("hold", "burn"),
    ("hold", "capture"),
    ("hold", "reverse"),
    ("hold", "void"),
    ("void", "earn"),
    ("void", "burn"),
    ("void", "hold"),
    ("void", "reverse"),
    ("earn", "hold"),
    ("earn", "void"),
    ("burn", "hold"),
    ("capture", "void"),
    ("reverse", "hold"),
]


@pytest.mark.parametrize(("first", "second"), ACROSS_KINDS)
def test_a_key_used_for_one_kind_of_write_is_refused_for_another(ctx, first, second):
    # Given a write of one kind that succeeded under key K
    OPERATIONS[first](ctx, "K")

    # When the same partner sends a write of another kind under K
    # Then it is refused as a conflict on the key, and nothing is written
    factories.assert_refused(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        lambda: OPERATIONS[second](ctx, "K", other=True),
        field="idempotencyKey",
    )
    # and the first write still replays under K
    again = OPERATIONS[first](ctx, "K")
    assert again is not None
    assert selectors.ledger_check().ok


def test_the_same_key_from_other_callers_is_free_for_any_kind_of_write(ctx, other_partner):
    # Given a hold of one partner under "till-7"
    factories.hold(ctx.member, ctx.partner, 10, idempotency_key="till-7")

    # When another partner earns, and the member donates, under "till-7"
    earned = factories.earn(ctx.member, other_partner, 10, idempotency_key="till-7")
    donated = factories.donate(ctx.member, ctx.charity, 5, idempotency_key="till-7")

    # Then both are written: keys belong to their caller
    assert earned.pk != donated.pk
    assert selectors.ledger_check().ok


def _purchases_in_a_batch(ctx, keys: list[str]) -> list:
    """The partner's purchases of 10.00 by the member, one per key, sent as one batch."""
    from partners.services.batch import purchases_record_batch

    return purchases_record_batch(
        partner=ctx.partner,
        purchases=[
            {
                "member_number": ctx.member.member_number,
                "amount": "10.00",
                "currency": "USD",
                "reference": f"r-{key}",
                "idempotency_key": key,
            }
            for key in keys
        ],
    )


def test_a_purchase_in_a_batch_under_a_hold_key_is_refused_alone(ctx):
    # Given a hold of the partner under "till-9"
    factories.hold(ctx.member, ctx.partner, 10, idempotency_key="till-9")
    before = selectors.member_balance(member=ctx.member).balance

    # When the partner sends two purchases in a batch, one of them under "till-9"
    outcomes = _purchases_in_a_batch(ctx, ["till-9", "order-10"])

    # Then that purchase is refused with a conflict on its key, and the other is recorded
    assert [(o.status, o.code) for o in outcomes] == [
        ("rejected", ErrorCode.IDEMPOTENCY_CONFLICT),
        ("accepted", None),
    ]
    assert (
        selectors.member_balance(member=ctx.member).balance == before + outcomes[1].points_awarded
    )
    assert not LedgerTransaction.objects.filter(idempotency_key="till-9").exists()


def test_an_earn_batch_refuses_keys_used_for_holds_and_recorded_writes(ctx):
    from coalition.services.batch import EarnRequest, points_earn_batch

    # Given a hold under "h-1" and a void recorded under "v-1", by the partner
    factories.hold(ctx.member, ctx.partner, 10, idempotency_key="h-1")
    factories.void(ctx.hold, idempotency_key="v-1")

    # When the partner's batch earns under "h-1", "v-1" and a fresh key
    outcomes = points_earn_batch(
        caller=f"partner:{ctx.partner.pk}",
        partner=ctx.partner,
        requests=[
            EarnRequest(member_id=ctx.member.pk, idempotency_key=key, partner_points=5)
            for key in ("h-1", "v-1", "fresh")
        ],
    )

    # Then only the fresh key earns
    assert [o.code for o in outcomes] == [
        str(ErrorCode.IDEMPOTENCY_CONFLICT),
        str(ErrorCode.IDEMPOTENCY_CONFLICT),
        None,
    ]
    assert LedgerTransaction.objects.filter(idempotency_key__in=["h-1", "v-1"]).count() == 0


def _holds_missed_until_the_database_refuses(monkeypatch, *modules) -> list:
    """Every `held_keys` look of `modules` answers as if the hold had not committed yet (it
    committed just after the look: the race the database's key rule catches) until the
    database has refused a key once, and truthfully from then on. Returns the database's
    refusals (each once, however many handlers saw it)."""
    from coalition.services import idempotency

    refusals: list = []
    is_key_used_elsewhere = idempotency._is_key_used_elsewhere

    def refused(exc) -> bool:
        if is_key_used_elsewhere(exc):
            if not any(exc is seen for seen in refusals):
                refusals.append(exc)
            return True
        return False

    monkeypatch.setattr(idempotency, "_is_key_used_elsewhere", refused)
    for module in modules:
        real = module.held_keys

        def held_keys(*, caller, keys, real=real):
            return real(caller=caller, keys=keys) if refusals else set()

        monkeypatch.setattr(module, "held_keys", held_keys)
    return refusals


# Its own transaction, as a request or a Celery task runs it (inside a caller's transaction
# the caller's retry is the one that counts); the key rule across kinds is PostgreSQL's.
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_hold_committed_after_a_batch_looked_refuses_just_that_purchase(ctx, monkeypatch):
    from coalition.services import batch as earn_batch
    from partners.services import batch

    # Given a hold of the partner under "till-3", which the batch's looks miss
    factories.hold(ctx.member, ctx.partner, 10, idempotency_key="till-3")
    refusals = _holds_missed_until_the_database_refuses(monkeypatch, batch, earn_batch)
    before = selectors.member_balance(member=ctx.member).balance

    # When the partner sends three purchases in a batch, the second under "till-3"
    outcomes = _purchases_in_a_batch(ctx, ["order-1", "till-3", "order-2"])

    # Then the database refused the key once, the batch looked again, and only that purchase
    # is refused: the other two are recorded once each
    assert len(refusals) == 1
    assert [(o.status, o.code) for o in outcomes] == [
        ("accepted", None),
        ("rejected", ErrorCode.IDEMPOTENCY_CONFLICT),
        ("accepted", None),
    ]
    assert LedgerTransaction.objects.filter(idempotency_key__in=["order-1", "order-2"]).count() == 2
    assert not LedgerTransaction.objects.filter(idempotency_key="till-3").exists()
    earned = outcomes[0].points_awarded + outcomes[2].points_awarded
    assert selectors.member_balance(member=ctx.member).balance == before + earned
    assert selectors.ledger_check().ok


# Its own transaction, as a request or a Celery task runs it (inside a caller's transaction
# the caller's retry is the one that counts); the key rule across kinds is PostgreSQL's.
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_earn_batch_that_missed_a_hold_key_posts_the_other_rows(ctx, monkeypatch):
    from coalition.services import batch
    from coalition.services.batch import EarnRequest, points_earn_batch

    # Given a hold under "h-2", which the earn batch's look misses
    factories.hold(ctx.member, ctx.partner, 10, idempotency_key="h-2")
    refusals = _holds_missed_until_the_database_refuses(monkeypatch, batch)

    # When the partner's batch earns under "h-2" and a fresh key
    outcomes = points_earn_batch(
        caller=f"partner:{ctx.partner.pk}",
        partner=ctx.partner,
        requests=[
            EarnRequest(member_id=ctx.member.pk, idempotency_key=key, partner_points=5)
            for key in ("h-2", "fresh-2")
        ],
    )

    # Then the database refused the key once, and the retry refuses "h-2" alone while the
    # fresh key earns
    assert len(refusals) == 1
    assert [o.code for o in outcomes] == [str(ErrorCode.IDEMPOTENCY_CONFLICT), None]
    assert LedgerTransaction.objects.filter(idempotency_key="fresh-2").count() == 1
    assert not LedgerTransaction.objects.filter(idempotency_key="h-2").exists()


def _counting_refusals(monkeypatch) -> list:
    """Every look `ledger_write` takes at a refusal of a key used for another kind of write."""
    from coalition.services import idempotency

    seen: list = []
    real = idempotency._is_key_used_elsewhere
    monkeypatch.setattr(
        idempotency, "_is_key_used_elsewhere", lambda exc: seen.append(exc) or real(exc)
    )
    return seen


# Its own transaction, as a request or a Celery task runs it (inside a caller's transaction
# the caller's retry is the one that counts); the key rule across kinds is PostgreSQL's.
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_single_write_the_database_refuses_twice_is_the_callers_conflict(ctx, monkeypatch):
    # Given a hold under "till-4" and a burn whose own look never sees it (as if it lost the
    # race on both attempts)
    factories.hold(ctx.member, ctx.partner, 10, idempotency_key="till-4")
    attempts = _counting_refusals(monkeypatch)
    before = selectors.member_balance(member=ctx.member).balance

    # When the partner burns under "till-4"
    # Then it is a conflict on the key, after one retry, and nothing is written
    factories.assert_refused(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        lambda: factories.burn(ctx.member, ctx.partner, 10, idempotency_key="till-4"),
        field="idempotencyKey",
    )
    assert len(attempts) == 2
    assert selectors.member_balance(member=ctx.member).balance == before
    assert not LedgerTransaction.objects.filter(idempotency_key="till-4").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_write_on_a_connection_out_of_autocommit_is_the_callers_to_retry(ctx, monkeypatch):

    # Given a hold under "till-5", and a caller managing its own transaction (autocommit off)
    factories.hold(ctx.member, ctx.partner, 10, idempotency_key="till-5")
    looks = _counting_refusals(monkeypatch)
    with factories.callers_own_transaction():
        # When it burns under the hold's key
        # Then it is a conflict at once, not retried inside the caller's transaction, which
        # goes on: the caller's own earn after it is kept
        factories.assert_refused(
            ErrorCode.IDEMPOTENCY_CONFLICT,
            lambda: factories.burn(ctx.member, ctx.partner, 10, idempotency_key="till-5"),
            field="idempotencyKey",
        )
        assert len(looks) == 1
        factories.earn(ctx.member, ctx.partner, 7, idempotency_key="after-5")
    assert LedgerTransaction.objects.filter(idempotency_key="after-5").count() == 1
    assert not LedgerTransaction.objects.filter(idempotency_key="till-5").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_refused_write_in_an_on_commit_callback_never_runs_the_committed_write_again(
    ctx, monkeypatch
):
    from django.db import transaction

    from coalition.errors import IdempotencyConflict
    from coalition.services.idempotency import ledger_write

    # Given a hold under "till-6", and a write whose on-commit follow-up burns under that key
    factories.hold(ctx.member, ctx.partner, 10, idempotency_key="till-6")
    runs = []

    @ledger_write
    def earn_then_follow_up():
        runs.append(factories.earn(ctx.member, ctx.partner, 5, idempotency_key=None))

        def follow_up():
            with transaction.atomic():
                factories.burn(ctx.member, ctx.partner, 1, idempotency_key="till-6")

        transaction.on_commit(follow_up)

    # When the write commits and its follow-up is refused
    # Then the follow-up's refusal is the conflict on its key, and the write ran once
    with pytest.raises(IdempotencyConflict) as refused:
        earn_then_follow_up()
    assert refused.value.field == "idempotencyKey"
    assert len(runs) == 1
    assert LedgerTransaction.objects.filter(pk=runs[0].pk).exists()

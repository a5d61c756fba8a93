"""Seeded fault injection (issue 9): the database fails chosen statements with a
serialization failure, a deadlock, a lock timeout, or loses the connection before or during
the commit. The services retry what is safe to retry (`ledger_write`), a client retries
with the same idempotency key, and afterwards the ledger is whole: every invariant holds
(`ledger_check`), no key posted twice, and the balances are exactly what the successful
requests say.

Faults are real PostgreSQL errors, not mocks: an injected failure runs
`RAISE EXCEPTION USING ERRCODE = '40001'` (or 40P01, 55P03) in place of the statement, so
the transaction is aborted as the real failure would abort it; a lost connection is the
socket shut under psycopg2 (no SQLSTATE, as a network failure) or the session terminated
by the server (57P01).
"""

from __future__ import annotations

import random
import re
import socket
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg2
import pytest
from django.db import DatabaseError, connection
from django.db.models import Sum

from coalition import services as ledger
from coalition.models import Account, LedgerTransaction
from coalition.selectors import ledger_check
from partners.services import (
    partner_transaction_reverse,
    points_redeem,
    purchase_record,
    redemption_authorize,
    redemption_capture,
)
from tests import factories

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# The first seed runs in every test run; the others with the slow tests.
SEEDS = [
    7,
    pytest.param(1009, marks=pytest.mark.slow),
    pytest.param(424242, marks=pytest.mark.slow),
]
# Statements of a ledger write worth failing: locks, the posting, lots, holds, idempotency.
TARGETS = re.compile(
    r'^(SELECT .* FOR UPDATE|INSERT INTO "coalition_(transaction|entry|lot|hold|idempotency)"'
    r'|UPDATE "coalition_(lot|account|hold)")',
    re.DOTALL,
)
FAILURE_SQL = "DO $$ BEGIN RAISE EXCEPTION 'injected fault' USING ERRCODE = '{code}'; END $$"
KINDS = {
    "serialization_failure": "40001",
    "deadlock": "40P01",
    "lock_timeout": "55P03",
    "connection_lost": "network",
    "session_terminated": "terminate",
}


@dataclass
class Faults:
    """A seeded `connection.execute_wrapper`: fails chosen statements, and (optionally)
    loses the connection during commits."""

    seed: int
    kind: str
    rate: float = 0.25
    commit_rate: float = 0.0
    max_commit_faults: int | None = None
    fired: Counter = field(default_factory=Counter)

    def __post_init__(self):
        self.random = random.Random(self.seed)

    def __call__(self, execute, sql, params, many, context):
        if self.random.random() < self.rate and TARGETS.match(sql):
            self.fired[self.kind] += 1
            code = KINDS[self.kind]
            if code == "network":
                _cut_the_wire(context["connection"])
            elif code == "terminate":
                return execute(
                    "SELECT pg_terminate_backend(pg_backend_pid())", None, False, context
                )
            else:
                return execute(FAILURE_SQL.format(code=code), None, False, context)
        return execute(sql, params, many, context)

    @contextmanager
    def active(self):
        original_commit = connection._commit

        def commit_then_lose_the_connection():
            original_commit()
            spent = self.max_commit_faults is not None and (
                self.fired["lost_after_commit"] >= self.max_commit_faults
            )
            if not spent and self.random.random() < self.commit_rate:
                # Committed on the server; the acknowledgement never reaches us.
                self.fired["lost_after_commit"] += 1
                _cut_the_wire(connection)
                with connection.wrap_database_errors:
                    raise psycopg2.OperationalError("server closed the connection unexpectedly")

        connection._commit = commit_then_lose_the_connection
        try:
            with connection.execute_wrapper(self):
                yield self
        finally:
            del connection._commit  # the class's method again
            connection.close()


def _cut_the_wire(db) -> None:
    """Shut the socket under psycopg2: the next use fails with no SQLSTATE, as a network
    failure does (the server then rolls back whatever transaction was open)."""
    raw = db.connection
    sock = socket.fromfd(raw.fileno(), socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.close()  # the duplicate only; psycopg2's descriptor is shut now


# --------------------------------------------------------------------------- the workload


@dataclass
class Till:
    """A partner's till that retries a failed request with the same idempotency key, as the
    API contract tells integrators to."""

    partner: object
    attempts: int = 8
    outcomes: dict = field(default_factory=dict)  # key -> (operation, points moved or None)

    def call(self, operation, **kwargs):
        last = None
        for _ in range(self.attempts):
            try:
                return operation(partner=self.partner, **kwargs)
            except DatabaseError as exc:  # the connection dropped, or retries ran out
                last = exc
        raise AssertionError(f"gave up after {self.attempts} attempts: {last!r}")


def run_workload(seed: int, till: Till, members: list) -> dict[str, int]:
    """A seeded mix of earns, burns, holds with captures and reversals. Returns, per member
    number, the points the successful requests moved."""
    rng = random.Random(seed)
    expected = {member.member_number: 0 for member in members}
    earned: list[tuple[int, str, int]] = []
    for step in range(24):
        member = rng.choice(members)
        number = member.member_number
        kind = rng.choice(["earn", "earn", "burn", "hold", "reverse"])
        key = f"s{seed}-{step}-{kind}"
        if kind == "earn" or (kind == "reverse" and not earned):
            amount = rng.randint(10, 400)
            result = till.call(
                purchase_record,
                idempotency_key=key,
                amount=f"{amount}.00",
                currency="USD",
                reference=key,
                member_number=number,
            )
            expected[number] += result.points_awarded
            earned.append((result.transaction.pk, number, result.points_awarded))
        elif kind == "burn":
            points = rng.randint(1, 60)
            if expected[number] < points:
                continue
            till.call(
                points_redeem, idempotency_key=key, member_number=number, points=points,
                reference=key,
            )  # fmt: skip
            expected[number] -= points
        elif kind == "hold":
            points = rng.randint(2, 60)
            if expected[number] < points:
                continue
            hold = till.call(
                redemption_authorize, idempotency_key=key, member_number=number, points=points,
                reference=key,
            )  # fmt: skip
            captured = rng.randint(1, points)
            till.call(
                redemption_capture, idempotency_key=key + "-c", hold_id=hold.pk, points=captured
            )
            expected[number] -= captured
        else:
            txn_id, owner, points = earned.pop(rng.randrange(len(earned)))
            till.call(partner_transaction_reverse, idempotency_key=key, transaction_id=txn_id)
            expected[owner] -= points
    return expected


@pytest.fixture
def shop(programme):
    partner, _key = factories.onboarded_partner()
    members = [factories.member() for _ in range(3)]
    return partner, members


def assert_ledger_whole(partner, members, expected):
    report = ledger_check()
    assert report.ok, report.problems
    keys = Counter(
        LedgerTransaction.objects.filter(caller=f"partner:{partner.pk}").values_list(
            "idempotency_key", flat=True
        )
    )
    assert keys and max(keys.values()) == 1, "an idempotency key posted twice"
    for member in members:
        wallet = Account.objects.get(member=member)
        assert wallet.balance == expected[member.member_number]
        posted = member.transactions.aggregate(total=Sum("member_points"))["total"] or 0
        assert posted == wallet.balance


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["serialization_failure", "deadlock", "lock_timeout"])
def test_transient_failures_are_retried_and_the_ledger_stays_whole(shop, kind, seed):
    partner, members = shop
    till = Till(partner)

    with Faults(seed, kind, rate=0.2).active() as faults:
        expected = run_workload(seed, till, members)

    assert faults.fired[kind] > 0
    assert_ledger_whole(partner, members, expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["connection_lost", "session_terminated"])
def test_a_connection_lost_before_the_commit_is_retried_on_a_new_one(shop, kind, seed):
    partner, members = shop
    till = Till(partner)

    with Faults(seed, kind, rate=0.1).active() as faults:
        expected = run_workload(seed, till, members)

    assert faults.fired[kind] > 0
    assert_ledger_whole(partner, members, expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_connection_lost_during_the_commit_replays_the_committed_write(shop, seed):
    partner, members = shop
    till = Till(partner)

    with Faults(seed, "serialization_failure", rate=0.05, commit_rate=0.3).active() as faults:
        expected = run_workload(seed, till, members)

    assert faults.fired["lost_after_commit"] > 0
    assert_ledger_whole(partner, members, expected)


def test_the_client_retry_after_a_lost_answer_returns_the_original_result(shop):
    """The write committed but its answer never reached the till (the connection broke after
    the commit): the till's retry with the same key gets the first result, nothing more."""
    partner, (member, *_) = shop
    request = dict(
        idempotency_key="lost-answer",
        amount="25.00",
        currency="USD",
        reference="r-1",
        member_number=member.member_number,
    )
    with Faults(
        1, "serialization_failure", rate=0.0, commit_rate=1.0, max_commit_faults=1
    ).active() as faults:
        first = purchase_record(partner=partner, **request)  # retried inside: a replay
    assert faults.fired["lost_after_commit"] >= 1
    assert first.points_awarded == 25

    again = purchase_record(partner=partner, **request)

    assert again.transaction.pk == first.transaction.pk and again.replayed
    assert LedgerTransaction.objects.filter(idempotency_key="lost-answer").count() == 1
    assert ledger_check().ok


def test_a_write_without_a_key_is_not_retried_when_the_commit_is_in_doubt(shop):
    """Without an idempotency key a retry could post twice: the doubt is the caller's."""
    partner, (member, *_) = shop
    calls = []

    @ledger.ledger_write
    def unkeyed_adjustment():
        calls.append(1)
        LedgerTransaction.objects.filter(pk=-1).exists()

    with Faults(3, "serialization_failure", rate=0.0, commit_rate=1.0).active():
        with pytest.raises(DatabaseError):
            unkeyed_adjustment()
    assert calls == [1]


def test_a_lost_connection_before_the_commit_is_retried_even_without_a_key(shop):
    partner, (member, *_) = shop
    calls = []

    @ledger.ledger_write
    def unkeyed_read_lock():
        calls.append(1)
        Account.objects.select_for_update().filter(member=member).first()

    faults = Faults(5, "connection_lost", rate=1.0)
    with faults.active():
        faults.rate = 1.0
        with pytest.raises(DatabaseError):  # fails every time: retries run out
            unkeyed_read_lock()
    assert len(calls) == 1 + ledger.idempotency._setting("WRITE_RETRIES")

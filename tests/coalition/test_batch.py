"""Set-based posting (`points_earn_batch`): a batch writes what the same earns posted one by
one write, refuses bad rows alone, replays used keys, settles duplicate keys inside the batch,
and never deadlocks against concurrent batches on the same members."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from coalition import selectors, services
from coalition.errors import ErrorCode
from coalition.models import (
    Account,
    Entry,
    LedgerTransaction,
    Member,
    MemberTier,
    PointLot,
    Tier,
    TierChange,
)
from coalition.services import EarnRequest, OutcomeStatus, points_earn_batch
from tests import factories

NOW = datetime(2030, 3, 15, 12, 0, tzinfo=UTC)


def request(member, points, *, key=None, operator_points=0, **kwargs) -> EarnRequest:
    return EarnRequest(
        member_id=member.pk,
        idempotency_key=key or factories.key("batch"),
        partner_points=points,
        operator_points=operator_points,
        **kwargs,
    )


def batch(partner, requests, *, now=NOW):
    return points_earn_batch(
        caller=f"partner:{partner.pk}", partner=partner, requests=requests, now=now
    )


def member_picture(member) -> dict:
    """Everything an earn changes for one member, without ids."""
    wallet = Account.objects.get(member_id=member.pk)
    return {
        "balance": wallet.balance,
        "last_activity_at": wallet.last_activity_at,
        "lots": list(
            PointLot.objects.filter(member=member)
            .order_by("id")
            .values_list("points", "remaining", "expires_at", "created_at")
        ),
        "transactions": [
            (txn.kind, txn.member_points, txn.reference, sorted_legs(txn))
            for txn in LedgerTransaction.objects.filter(member=member).order_by("id")
        ],
        "tier": MemberTier.objects.filter(member=member)
        .values_list("tier__code", flat=True)
        .first(),
    }


def sorted_legs(txn) -> list:
    return sorted(Entry.objects.filter(transaction=txn).values_list("account__kind", "points"))


def negative_member(partner):
    """A member whose wallet a reversal took to -80 (earned 100, spent 80, earn reversed)."""
    member = factories.member()
    earned = factories.earn(member, partner, 100, now=NOW - timedelta(days=2))
    factories.burn(member, partner, 80, now=NOW - timedelta(days=2))
    factories.reverse(earned, now=NOW - timedelta(days=1))
    assert factories.wallet(member).balance == -80
    return member


# --------------------------------------------------------------------------- equivalence


def test_batch_writes_what_single_earns_write(partner, programme):
    # Given two identical sets of members: plain ones, and one a reversal took to -80
    plain_single = [factories.member() for _ in range(3)]
    plain_batch = [factories.member() for _ in range(3)]
    negative_single = negative_member(partner)
    negative_batch = negative_member(partner)
    # The same earns for each set, a member appearing several times
    plan = [(0, 120, 0), (1, 30, 5), (0, 7, 0), (3, 50, 0), (2, 1, 0), (3, 50, 0), (3, 1, 9)]

    # When one set earns one by one and the other in one batch
    single_members = plain_single + [negative_single]
    batch_members = plain_batch + [negative_batch]
    for position, points, bonus in plan:
        services.points_earn(
            caller=f"partner:{partner.pk}",
            idempotency_key=factories.key("single"),
            member=single_members[position],
            partner=partner,
            partner_points=points,
            operator_points=bonus,
            reference=f"r{position}",
            now=NOW,
        )
    outcomes = batch(
        partner,
        [
            request(
                batch_members[position], points, operator_points=bonus, reference=f"r{position}"
            )
            for position, points, bonus in plan
        ],
    )

    # Then every row posted, and each member of the batch looks exactly like their twin
    assert [outcome.status for outcome in outcomes] == [OutcomeStatus.POSTED] * len(plan)
    assert [outcome.points for outcome in outcomes] == [p + b for _, p, b in plan]
    for single, batched in zip(single_members, batch_members, strict=True):
        assert member_picture(batched) == member_picture(single)
    # The negative wallet was repaid before any lot: -80 + 50 → no lot; +50 → lot of 20; +10
    assert factories.wallet(negative_batch).balance == -80 + 50 + 50 + 10
    assert selectors.ledger_check().ok


def test_batch_upgrades_tiers_like_single_earns(partner, programme):
    # Given Base, Silver (from 100) and Gold (from 200), and a member with 90 points
    Tier.objects.create(code="base", name="Base", qualifying_points=0)
    silver = Tier.objects.create(code="silver", name="Silver", qualifying_points=100)
    gold = Tier.objects.create(code="gold", name="Gold", qualifying_points=200)
    climber, stayer, jumper = (factories.member() for _ in range(3))
    factories.earn(climber, partner, 90, now=NOW - timedelta(days=1))

    # When a batch gives the climber 20, the stayer 10 and the jumper 150 + 100
    batch(
        partner,
        [request(climber, 20), request(stayer, 10), request(jumper, 150), request(jumper, 100)],
    )

    # Then the climber is Silver, the jumper Gold (one change, from Base), the stayer unchanged
    assert services.member_tier(member=climber) == silver
    assert services.member_tier(member=jumper) == gold
    assert not MemberTier.objects.filter(member=stayer).exists()
    change = TierChange.objects.get(member=jumper)
    assert (change.from_tier.code, change.to_tier, change.qualifying_points) == ("base", gold, 250)
    assert selectors.ledger_check().ok


# --------------------------------------------------------------------------- refusals


def test_bad_rows_are_rejected_alone(partner, programme):
    # Given active, suspended and closed members
    active = factories.member()
    suspended = factories.member()
    closed = factories.member()
    services.member_set_status(member=suspended, status=Member.Status.SUSPENDED)
    services.member_set_status(member=closed, status=Member.Status.CLOSED)

    # When a batch mixes good rows with bad ones
    outcomes = batch(
        partner,
        [
            request(active, 10),
            request(suspended, 10),
            request(closed, 10),
            request(active, 0),
            request(active, -5),
            request(active, True),
            request(active, 10**9),
            EarnRequest(member_id=10**9, idempotency_key="ghost", partner_points=10),
            request(active, 10, key="  "),
            request(active, 10, reference="x" * 300),
            request(active, 20),
        ],
    )

    # Then each bad row has its code, and the good rows posted
    assert [(outcome.status, outcome.code) for outcome in outcomes] == [
        (OutcomeStatus.POSTED, None),
        (OutcomeStatus.REJECTED, ErrorCode.MEMBER_NOT_ACTIVE),
        (OutcomeStatus.REJECTED, ErrorCode.MEMBER_NOT_ACTIVE),
        (OutcomeStatus.REJECTED, ErrorCode.INVALID),
        (OutcomeStatus.REJECTED, ErrorCode.INVALID),
        (OutcomeStatus.REJECTED, ErrorCode.INVALID),
        (OutcomeStatus.REJECTED, ErrorCode.LIMIT_EXCEEDED),
        (OutcomeStatus.REJECTED, ErrorCode.NOT_FOUND),
        (OutcomeStatus.REJECTED, ErrorCode.INVALID),
        (OutcomeStatus.REJECTED, ErrorCode.INVALID),
        (OutcomeStatus.POSTED, None),
    ]
    assert outcomes[4].field == "partnerPoints" and outcomes[8].field == "idempotencyKey"
    assert factories.wallet(active).balance == 30
    assert factories.wallet(suspended).balance == factories.wallet(closed).balance == 0
    assert LedgerTransaction.objects.count() == 2
    assert selectors.ledger_check().ok


def test_too_many_requests_are_refused_whole(partner, member):
    factories.assert_refused(
        ErrorCode.LIMIT_EXCEEDED,
        lambda: batch(partner, [request(member, 1) for _ in range(1001)]),
        field="requests",
    )


# --------------------------------------------------------------------------- idempotency


def test_a_batch_sent_again_adds_nothing(partner, programme):
    # Given a batch that posted
    members = [factories.member() for _ in range(4)]
    requests = [request(member, 10 * (i + 1)) for i, member in enumerate(members)]
    first = batch(partner, requests)
    before = factories.ledger_state()

    # When the same batch is sent again (later)
    again = batch(partner, requests, now=NOW + timedelta(minutes=5))

    # Then every row is a replay of the same transaction, and nothing changed
    assert [outcome.status for outcome in again] == [OutcomeStatus.REPLAYED] * 4
    assert [o.transaction_id for o in again] == [o.transaction_id for o in first]
    assert [o.points for o in again] == [10, 20, 30, 40]
    assert factories.ledger_state() == before


def test_keys_within_and_across_batches(partner, programme):
    # Given a key already used by a single earn
    member, other = factories.member(), factories.member()
    earlier = factories.earn(member, partner, 5, idempotency_key="used", now=NOW)

    # When a batch repeats keys: identically, with another payload, and the used key
    outcomes = batch(
        partner,
        [
            request(member, 10, key="a"),
            request(member, 10, key="a"),  # the same request again: a replay of row 0
            request(other, 10, key="a"),  # the same key, another member: a conflict
            request(member, 5, key="used"),  # what the single earn asked: a replay
            request(member, 6, key="used"),  # something else under its key: a conflict
        ],
    )

    # Then the first row with a key wins; used keys replay or conflict
    assert [(o.status, o.code) for o in outcomes] == [
        (OutcomeStatus.POSTED, None),
        (OutcomeStatus.REPLAYED, None),
        (OutcomeStatus.REJECTED, ErrorCode.IDEMPOTENCY_CONFLICT),
        (OutcomeStatus.REPLAYED, None),
        (OutcomeStatus.REJECTED, ErrorCode.IDEMPOTENCY_CONFLICT),
    ]
    assert outcomes[1].transaction_id == outcomes[0].transaction_id
    assert outcomes[3].transaction_id == earlier.pk
    assert factories.wallet(member).balance == 15
    assert factories.wallet(other).balance == 0
    # And a single earn with the batch's key and payload is its replay too
    again = services.points_earn(
        caller=f"partner:{partner.pk}",
        idempotency_key="a",
        member=member,
        partner=partner,
        partner_points=10,
        now=NOW,
    )
    assert again.pk == outcomes[0].transaction_id and again.replayed


# --------------------------------------------------------------------------- concurrency


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_overlapping_batches_never_deadlock(partner, programme):
    # Given 40 members, and 4 batches of 250 earns each over all of them, in random orders
    members = [factories.member() for _ in range(40)]
    plans = []
    for thread in range(4):
        rng = random.Random(thread)
        plans.append(
            [
                request(members[rng.randrange(40)], rng.randint(1, 50), key=f"t{thread}-{n}")
                for n in range(250)
            ]
        )

    # When the 4 batches run at once, each on its own connection, twice (the second run
    # replays)
    def work(index):
        return [batch(partner, plans[index]), batch(partner, plans[index])]

    results = factories.run_concurrently(4, work)

    # Then none failed (no deadlock), and every wallet holds exactly what was planned for it
    assert [status for status, _ in results] == ["ok"] * 4, results
    expected: dict[int, int] = {}
    for plan in plans:
        for row in plan:
            expected[row.member_id] = expected.get(row.member_id, 0) + row.partner_points
    balances = dict(Account.objects.filter(member__in=members).values_list("member_id", "balance"))
    assert balances == {member.pk: expected.get(member.pk, 0) for member in members}
    for _, (first, second) in results:
        assert {o.status for o in first} == {OutcomeStatus.POSTED}
        assert [o.transaction_id for o in second] == [o.transaction_id for o in first]
    assert LedgerTransaction.objects.filter(kind="earn").count() == 1000
    assert selectors.ledger_check().ok
    connection.close()


def test_amounts_and_metadata_are_kept(partner, member):
    outcomes = batch(
        partner,
        [
            request(
                member,
                12,
                reference="receipt\\1\t\r\nend",
                purchase_amount=Decimal("12.34"),
                purchase_currency="USD",
                metadata={"breakdown": [{"kind": "base", "label": "12.34 × 1 \\ \t"}]},
            )
        ],
    )
    txn = LedgerTransaction.objects.get(pk=outcomes[0].transaction_id)
    # Kept as sent, whatever COPY's text format has to escape on the way
    assert (txn.reference, txn.purchase_amount, txn.purchase_currency) == (
        "receipt\\1\t\r\nend",
        Decimal("12.34"),
        "USD",
    )
    assert txn.metadata == {"breakdown": [{"kind": "base", "label": "12.34 × 1 \\ \t"}]}
    assert txn.created_at == NOW

"""Purchases in bulk (`purchases_record_batch`) and purchase files (`import_purchases`): a
batch awards exactly what the same purchases recorded one by one award, bad rows are refused
alone with the codes of `purchase_record`, a batch or a file sent again adds nothing, and
concurrent batches on the same members never deadlock. Also `generate_volume`."""

import csv
import io
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from coalition import selectors, services
from coalition.errors import ErrorCode
from coalition.models import Account, Entry, LedgerTransaction, Member, MemberTier, PointLot, Tier
from partners.imports import import_chunk_process
from partners.models import (
    Promotion,
    PromotionAward,
    PurchaseImport,
    ReferralReward,
)
from partners.services import purchase_record, store_create
from partners.services.batch import purchases_record_batch
from tests import factories

Kind = Promotion.Kind
NOW = datetime(2030, 3, 15, 12, 0, tzinfo=UTC)


def purchase(member, amount, **kwargs) -> dict:
    kwargs.setdefault("idempotency_key", factories.key("bulk"))
    kwargs.setdefault("currency", "USD")
    kwargs.setdefault("reference", f"receipt-{kwargs['idempotency_key']}")
    return {"member_number": member.member_number, "amount": amount, **kwargs}


def record_batch(partner, purchases, *, now=NOW):
    return purchases_record_batch(partner=partner, purchases=purchases, now=now)


def outcome_codes(outcomes) -> list:
    return [(o.status, o.code, o.field) for o in outcomes]


# --------------------------------------------------------------------------- equivalence


def ledger_picture(members, transaction_ids) -> dict:
    """What the purchases wrote, without ids (they differ between two runs)."""
    transactions = LedgerTransaction.objects.in_bulk([t for t in transaction_ids if t])
    return {
        "purchases": [
            None
            if txn_id is None
            else (
                transactions[txn_id].member_points,
                transactions[txn_id].metadata,
                sorted(
                    Entry.objects.filter(transaction_id=txn_id).values_list(
                        "account__kind", "points"
                    )
                ),
            )
            for txn_id in transaction_ids
        ],
        "wallets": [
            Account.objects.filter(member=m).values_list("balance", "last_activity_at").get()
            for m in members
        ],
        # Sorted: a referral bonus's lot is written after the batch's earns, not between
        # them (same expiry, so the same points expire at the same time either way).
        "lots": [
            sorted(
                PointLot.objects.filter(member=m).values_list("points", "remaining", "expires_at")
            )
            for m in members
        ],
        "tiers": [
            MemberTier.objects.filter(member=m).values_list("tier__code", flat=True).first()
            for m in members
        ],
        "bonuses": sorted(
            LedgerTransaction.objects.filter(kind="bonus", created_at=NOW).values_list(
                "member_id", "member_points"
            )
        ),
        "awards": sorted(
            PromotionAward.objects.filter(transaction__created_at=NOW).values_list(
                "promotion__name", "member_id", "points"
            )
        ),
        "budgets": list(Promotion.objects.order_by("id").values_list("name", "awarded_points")),
        "referrals": sorted(ReferralReward.objects.values_list("referee_id", "referrer_id")),
        "ledger_ok": selectors.ledger_check().ok,
    }


def rolled_back(run):
    """Run `run()` in a transaction that is rolled back afterwards; return what it saw."""
    with transaction.atomic():
        picture = run()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # The deferred balance checks fire now, not at a commit that never comes.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        transaction.set_rollback(True)
    return picture


def test_a_batch_awards_what_single_purchases_award(programme, other_partner):
    # Given tiers (Silver from 100), a referral bonus, and a partner with every kind of rule
    Tier.objects.create(code="base", name="Base", qualifying_points=0)
    silver = Tier.objects.create(
        code="silver", name="Silver", qualifying_points=100, earn_multiplier=Decimal("1.5")
    )
    programme.referral_bonus_points = 30
    programme.save()
    grocer = factories.PartnerFactory(code="GROCER", excluded_categories=["gift-cards"])
    store_create(partner=grocer, code="S1")
    promote = factories.promotion
    promote(around=NOW, partner=grocer, name="Double from 20", multiplier=Decimal("2"),
            min_spend=Decimal("20"))  # fmt: skip
    promote(around=NOW, partner=grocer, name="Welcome", kind=Kind.FIXED_BONUS, bonus_points=25,
            first_purchase_only=True)  # fmt: skip
    promote(around=NOW, partner=None, name="Twice", kind=Kind.FIXED_BONUS, bonus_points=3,
            per_member_limit=2, min_spend=Decimal("1"))  # fmt: skip
    promote(around=NOW, partner=None, name="Cross", kind=Kind.CROSS_BRAND, bonus_points=50)
    promote(around=NOW, partner=grocer, name="Budget", kind=Kind.FIXED_BONUS, bonus_points=40,
            budget_points=100)  # fmt: skip
    promote(around=NOW, partner=grocer, name="Silver only", kind=Kind.FIXED_BONUS,
            bonus_points=15, tiers=[silver])  # fmt: skip
    promote(around=NOW, partner=grocer, name="Produce", kind=Kind.FIXED_BONUS, bonus_points=7,
            categories=["produce"])  # fmt: skip
    # Members: one near Silver, one who shopped elsewhere this month, a referee and their
    # referrer, one who bought at GROCER before, one a reversal took negative
    near = factories.member()
    factories.earn(near, other_partner, 90, now=NOW - timedelta(days=40))
    elsewhere = factories.member()
    factories.earn(elsewhere, other_partner, 5, now=NOW - timedelta(days=1))
    referrer = factories.member()
    referee = factories.member(referred_by=referrer)
    regular = factories.member()
    factories.earn(regular, grocer, 1, now=NOW - timedelta(days=3))
    negative = factories.member()
    earned = factories.earn(negative, other_partner, 100, now=NOW - timedelta(days=2))
    factories.burn(negative, other_partner, 90, now=NOW - timedelta(days=2))
    factories.reverse(earned, now=NOW - timedelta(days=1))
    members = [near, elsewhere, referrer, referee, regular, negative]
    basket = [
        {"sku": "APL", "category": "produce", "quantity": 2, "unit_price": "6.00"},
        {"sku": "GC", "category": "gift-cards", "quantity": 1, "unit_price": "20.00"},
    ]
    purchases = [
        purchase(near, "15.00", idempotency_key="p0"),  # crosses Silver (90 + 15 + 25 + …)
        purchase(near, "10.00", idempotency_key="p1"),  # now Silver: ×1.5 and "Silver only"
        purchase(elsewhere, "30.00", idempotency_key="p2", store_code="S1"),  # cross-brand
        purchase(elsewhere, "12.00", idempotency_key="p3"),  # cross-brand already given
        purchase(referee, "32.00", idempotency_key="p4", line_items=basket),  # referral
        purchase(referrer, "21.00", idempotency_key="p5"),  # referrer buys too
        purchase(referee, "0.50", idempotency_key="p6"),  # no points at all
        purchase(regular, "25.00", idempotency_key="p7"),  # not a first purchase
        purchase(negative, "60.00", idempotency_key="p8", occurred_at=NOW - timedelta(days=1)),
        purchase(near, "44.00", idempotency_key="p9"),  # limit of "Twice" reached
        purchase(referrer, "11.00", idempotency_key="p10"),
    ]

    # When the purchases are recorded one by one, and (from the same state) in one batch
    def one_by_one():
        kept = []
        for item in purchases:
            item = dict(item)
            result = purchase_record(partner=grocer, now=NOW, **item)
            kept.append(result.transaction.pk if result.transaction else None)
        return ledger_picture(members, kept), kept

    def in_one_batch():
        outcomes = record_batch(grocer, purchases)
        assert all(o.accepted and not o.replayed for o in outcomes), outcome_codes(outcomes)
        kept = [o.transaction_id for o in outcomes]
        return ledger_picture(members, kept), [o.points_awarded for o in outcomes]

    single, single_ids = rolled_back(one_by_one)
    batched, batch_points = rolled_back(in_one_batch)

    # Then both wrote the same: points, breakdowns, legs, wallets, lots, tiers, awards,
    # budgets, referral bonuses, and the ledger is sound
    for name in single:
        assert batched[name] == single[name], name
    assert single["ledger_ok"]
    assert batch_points == [p[0] if p else 0 for p in single["purchases"]]
    # And the scenario exercised what it says (spot checks)
    assert single["tiers"][0] == "silver"
    assert ("Cross", elsewhere.pk, 50) in single["awards"]
    assert [a for a in single["awards"] if a[0] == "Twice" and a[1] == near.pk] == [
        ("Twice", near.pk, 3),
        ("Twice", near.pk, 3),
    ]
    assert dict(single["budgets"])["Budget"] == 100
    assert single["referrals"] == [(referee.pk, referrer.pk)]
    assert single_ids[6] is None


# --------------------------------------------------------------------------- refusals


def test_bad_purchases_are_rejected_alone_with_the_codes_of_purchase_record(partner, programme):
    # Given an active member, a suspended one, and a euro partner's purchase in dollars
    member = factories.member()
    suspended = factories.member()
    services.member_set_status(member=suspended, status=Member.Status.SUSPENDED)
    before = factories.partner_state()

    # When a batch mixes good purchases with bad ones
    outcomes = record_batch(
        partner,
        [
            purchase(member, "10.00"),
            purchase(member, "10.00", currency="EUR"),
            purchase(member, "ten"),
            {**purchase(member, "10.00"), "member_number": "6337000000000000"},
            purchase(suspended, "10.00"),
            purchase(member, "10.00", store_code="NOPE"),
            purchase(member, "10.00", occurred_at=NOW + timedelta(days=1)),
            purchase(member, "10.00", line_items=[{"sku": "A", "quantity": 1, "unit_price": "9"}]),
            purchase(member, "10.00", reference=""),
            "not a purchase",
            purchase(member, "5.00"),
        ],
    )

    # Then each bad one has its code and field, and the good ones were recorded
    assert outcome_codes(outcomes) == [
        ("accepted", None, None),
        ("rejected", ErrorCode.CURRENCY_MISMATCH, "purchases.1.currency"),
        ("rejected", ErrorCode.INVALID, "purchases.2.amount"),
        ("rejected", ErrorCode.NOT_FOUND, "purchases.3.memberNumber"),
        ("rejected", ErrorCode.MEMBER_NOT_ACTIVE, "purchases.4"),
        ("rejected", ErrorCode.NOT_FOUND, "purchases.5.storeCode"),
        ("rejected", ErrorCode.INVALID, "purchases.6.occurredAt"),
        ("rejected", ErrorCode.INVALID, "purchases.7.lineItems"),
        ("rejected", ErrorCode.INVALID, "purchases.8.reference"),
        ("rejected", ErrorCode.INVALID, "purchases.9"),
        ("accepted", None, None),
    ]
    assert selectors.member_balance(member=member).balance == 15
    assert selectors.member_balance(member=suspended).balance == 0
    assert factories.partner_state() == before
    assert selectors.ledger_check().ok


def test_a_suspended_partner_records_nothing(partner, member):
    services_partner = __import__("partners.services", fromlist=["partner_set_status"])
    services_partner.partner_set_status(partner=partner, status="suspended")
    outcomes = record_batch(partner, [purchase(member, "10.00")])
    assert outcome_codes(outcomes) == [("rejected", ErrorCode.INVALID_STATE, "purchases.0.partner")]
    assert LedgerTransaction.objects.count() == 0


# --------------------------------------------------------------------------- idempotency


def test_a_batch_sent_again_adds_nothing_and_mixes_with_single_purchases(partner, programme):
    # Given a batch with a purchase too small to earn points, recorded once
    members = [factories.member() for _ in range(3)]
    purchases = [purchase(m, f"{10 * (i + 1)}.00") for i, m in enumerate(members)]
    purchases.append(purchase(members[0], "0.40"))
    first = record_batch(partner, purchases)
    before = factories.ledger_state()

    # When it is sent again
    again = record_batch(partner, purchases, now=NOW + timedelta(minutes=3))

    # Then every purchase is replayed with its first result, and nothing was written
    assert [(o.status, o.replayed) for o in again] == [("accepted", True)] * 4
    assert [o.transaction_id for o in again] == [o.transaction_id for o in first]
    assert [o.points_awarded for o in again] == [10, 20, 30, 0]
    assert factories.ledger_state() == before
    # And a single purchase with a batch's key and payload is its replay, and vice versa
    single = purchase_record(partner=partner, now=NOW, **purchases[1])
    assert single.replayed and single.transaction.pk == first[1].transaction_id
    alone = purchase(members[2], "7.00")
    recorded = purchase_record(partner=partner, now=NOW, **alone)
    (replayed,) = record_batch(partner, [alone])
    assert replayed.replayed and replayed.transaction_id == recorded.transaction.pk


def test_duplicate_keys_within_a_batch(partner, programme):
    member, other = factories.member(), factories.member()
    same = purchase(member, "10.00", idempotency_key="dup")
    outcomes = record_batch(
        partner,
        [
            same,
            dict(same),  # identical: a replay of the first
            purchase(other, "10.00", idempotency_key="dup"),  # another purchase: a conflict
            {**same, "amount": "x"},  # invalid anyway: refused for that
        ],
    )
    assert outcome_codes(outcomes) == [
        ("accepted", None, None),
        ("accepted", None, None),
        ("rejected", ErrorCode.IDEMPOTENCY_CONFLICT, "purchases.2.idempotencyKey"),
        ("rejected", ErrorCode.INVALID, "purchases.3.amount"),
    ]
    assert outcomes[1].replayed and outcomes[1].transaction_id == outcomes[0].transaction_id
    assert selectors.member_balance(member=member).balance == 10
    assert selectors.member_balance(member=other).balance == 0


def test_round_ups_and_webhook_events_follow_the_batch(partner, programme, charity):
    # Given a partner with a webhook endpoint, and a member giving 10 % of every earn
    from charity.models import Donation
    from charity.services import giving_preferences_update
    from partners.models import WebhookEndpoint, WebhookEvent

    WebhookEndpoint.objects.create(partner=partner, url="https://pos.example/hook", secret="s")
    giver, other = factories.member(), factories.member()
    giving_preferences_update(member=giver, round_up_charity=charity, round_up_percent=10)

    # When a batch records two purchases of the giver and one of another member
    outcomes = record_batch(
        partner,
        [purchase(giver, "50.00"), purchase(other, "20.00"), purchase(giver, "30.00")],
    )

    # Then each earn of the giver gave its round-up, and each purchase is one event
    assert sorted(Donation.objects.filter(source="round_up").values_list("points", flat=True)) == [
        3,
        5,
    ]
    assert selectors.member_balance(member=giver).balance == 80 - 8
    events = list(WebhookEvent.objects.order_by("id"))
    assert [event.payload["points"] for event in events] == [o.points_awarded for o in outcomes]
    assert events[0].payload["memberNumber"] == giver.member_number
    assert selectors.ledger_check().ok


# --------------------------------------------------------------------------- concurrency


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("busy_wallets_last", [False, True], ids=["wait", "busy-last"])
def test_concurrent_batches_on_the_same_members(partner, programme, busy_wallets_last):
    # Given 25 members and 4 batches of 150 purchases over all of them, in random orders
    members = [factories.member() for _ in range(25)]
    plans = []
    for thread in range(4):
        rng = random.Random(100 + thread)
        plans.append(
            [
                purchase(
                    members[rng.randrange(25)],
                    f"{rng.randint(1, 90)}.00",
                    idempotency_key=f"c{thread}-{n}",
                )
                for n in range(150)
            ]
        )

    # When they run at once on 4 connections (each twice: the second replays)
    def work(index):
        now = datetime.now(UTC)
        return [
            purchases_record_batch(
                partner=partner,
                purchases=plans[index],
                now=now,
                busy_wallets_last=busy_wallets_last,
            )
            for _ in range(2)
        ]

    results = factories.run_concurrently(4, work)

    # Then no batch failed, and every wallet holds exactly its purchases' points
    assert [status for status, _ in results] == ["ok"] * 4, results
    expected: dict[str, int] = {}
    for plan in plans:
        for item in plan:
            number = item["member_number"]
            expected[number] = expected.get(number, 0) + int(Decimal(item["amount"]))
    balances = dict(
        Account.objects.filter(member__in=members).values_list("member__member_number", "balance")
    )
    assert balances == {m.member_number: expected.get(m.member_number, 0) for m in members}
    for _, (first, second) in results:
        assert all(o.accepted and not o.replayed for o in first)
        assert [o.transaction_id for o in second] == [o.transaction_id for o in first]
    assert selectors.ledger_check().ok
    connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_file_chunk_records_the_others_first_while_one_wallet_is_held(partner, programme):
    # Given three members, and another transaction holding the second one's wallet
    first, held, last = (factories.member() for _ in range(3))
    batch = [purchase(member, "10.00", idempotency_key=f"held-{n}")
             for n, member in enumerate((first, held, last))]  # fmt: skip
    locked, release = threading.Event(), threading.Event()

    def hold_the_wallet():
        with transaction.atomic():
            Account.objects.select_for_update().get(member=held)
            locked.set()
            release.wait(20)
        connection.close()

    holder = threading.Thread(target=hold_the_wallet)
    holder.start()
    assert locked.wait(10)

    # When a file's chunk records the three purchases (busy wallets last)
    results = []

    def record():
        results.append(
            purchases_record_batch(
                partner=partner,
                purchases=batch,
                now=datetime.now(UTC),
                busy_wallets_last=True,
            )
        )
        connection.close()

    recorder = threading.Thread(target=record)
    recorder.start()
    try:
        # Then the two free members' purchases are committed while the third one waits
        deadline = time.monotonic() + 10
        keys = set()
        while keys != {"held-0", "held-2"} and time.monotonic() < deadline:
            keys = set(
                LedgerTransaction.objects.filter(idempotency_key__startswith="held-").values_list(
                    "idempotency_key", flat=True
                )
            )
            time.sleep(0.05)
        assert keys == {"held-0", "held-2"}
        assert recorder.is_alive()
    finally:
        release.set()
        holder.join(10)
        recorder.join(20)

    # And once the wallet is free, the third is recorded too, each purchase once
    (outcomes,) = results
    assert [(o.accepted, o.replayed) for o in outcomes] == [(True, False)] * 3
    assert [factories.wallet(m).balance for m in (first, held, last)] == [10, 10, 10]
    assert LedgerTransaction.objects.filter(idempotency_key__startswith="held-").count() == 3
    assert selectors.ledger_check().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_file_chunk_recorded_by_four_workers_at_once_counts_each_purchase_once(
    partner, programme
):
    # Given one chunk of 200 purchases over 30 members (a file sent twice, say, whose copies
    # four workers record at the same moment)
    members = [factories.member() for _ in range(30)]
    rng = random.Random(11)
    plan = [
        purchase(members[rng.randrange(30)], f"{rng.randint(1, 90)}.00", idempotency_key=f"s-{n}")
        for n in range(200)
    ]

    # When four workers record it at once, busy wallets last
    def work(_index):
        return purchases_record_batch(
            partner=partner, purchases=plan, now=datetime.now(UTC), busy_wallets_last=True
        )

    results = factories.run_concurrently(4, work)

    # Then every worker saw every purchase accepted, each written once (the same transaction
    # for all four), and every wallet holds exactly its purchases' points
    assert [status for status, _ in results] == ["ok"] * 4, results
    outcome_lists = [outcomes for _, outcomes in results]
    assert all(o.accepted for outcomes in outcome_lists for o in outcomes)
    for position in range(200):
        assert len({outcomes[position].transaction_id for outcomes in outcome_lists}) == 1
    assert sum(not o.replayed for outcomes in outcome_lists for o in outcomes) == 200
    assert LedgerTransaction.objects.filter(idempotency_key__startswith="s-").count() == 200
    expected: dict[str, int] = {}
    for item in plan:
        number = item["member_number"]
        expected[number] = expected.get(number, 0) + int(Decimal(item["amount"]))
    balances = dict(
        Account.objects.filter(member__in=members).values_list("member__member_number", "balance")
    )
    assert balances == {m.member_number: expected.get(m.member_number, 0) for m in members}
    assert selectors.ledger_check().ok
    connection.close()


def test_a_batch_under_its_own_key_cannot_leave_busy_wallets_for_later(partner):
    with pytest.raises(ValueError, match="one database transaction"):
        purchases_record_batch(
            partner=partner, purchases=[], idempotency_key="batch-1", busy_wallets_last=True
        )


# --------------------------------------------------------------------------- files


HEADER = ("idempotency_key", "member_number", "amount", "currency", "reference", "occurred_at",
          "store_code", "line_items")  # fmt: skip


def write_csv(path, rows, header=HEADER):
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_result(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as result:
        return list(csv.DictReader(result))


@pytest.fixture(autouse=True)
def import_folder(settings, tmp_path):
    """Uploads, result parts and results of this test in its own folder."""
    settings.PURCHASE_IMPORT_DIR = str(tmp_path / "imports")
    return tmp_path / "imports"


@pytest.fixture
def purchase_file(tmp_path, partner, programme):
    member = factories.member()
    store_create(partner=partner, code="S1")
    items = '[{"sku": "A", "category": "food, fresh", "quantity": 2, "unit_price": "2.50"}]'
    rows = [
        ["f-1", member.member_number, "12.00", "USD", "r1", "", "", ""],
        ["f-2", member.member_number, "abc", "USD", "r2", "", "", ""],
        ["f-3", "6337000000000000", "5.00", "USD", "r3", "", "", ""],
        ["f-4", member.member_number, "5.00", "USD", "r4\nsecond line", "", "S1", items],
        ["f-5", member.member_number, "7.00", "USD", "r5", "2030-03-14T09:30:00Z", "", ""],
        ["f-6", member.member_number, "7.00", "USD", "r6", "", "", "{not json"],
        ["f-7", member.member_number, "8.00", "EUR", "r7", "", "", ""],
    ]
    return write_csv(tmp_path / "eod.csv", rows), member


def test_import_command_end_to_end(purchase_file, partner, tmp_path, monkeypatch):
    # Given a file of 7 purchases, 4 of them bad, at "now" (the file's day)
    path, member = purchase_file
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)
    out = io.StringIO()

    # When it is imported in chunks of 2, here
    call_command(
        "import_purchases", partner.code, str(path), "--result", str(tmp_path / "result.csv"),
        "--chunk", "2", "--sync", stdout=out,
    )  # fmt: skip

    # Then the progress and the summary are shown, and the result lists every row
    shown = out.getvalue()
    assert "7 rows of eod.csv" in shown
    assert "processed 7/7 rows" in shown
    assert "7/7 rows, 3 accepted, 4 rejected" in shown
    result = read_result(tmp_path / "result.csv")
    assert [(r["row"], r["idempotency_key"], r["status"], r["error_code"]) for r in result] == [
        ("1", "f-1", "accepted", ""),
        ("2", "f-2", "rejected", "INVALID"),
        ("3", "f-3", "rejected", "NOT_FOUND"),
        ("4", "f-4", "accepted", ""),
        ("5", "f-5", "accepted", ""),
        ("6", "f-6", "rejected", "INVALID"),
        ("7", "f-7", "rejected", "CURRENCY_MISMATCH"),
    ]
    assert [r["error_field"] for r in result] == [
        "",
        "amount",
        "memberNumber",
        "",
        "",
        "lineItems",
        "currency",
    ]
    assert [r["points"] for r in result if r["status"] == "accepted"] == ["12", "5", "7"]
    txn = LedgerTransaction.objects.get(pk=result[3]["transaction_id"])
    assert txn.reference == "r4\nsecond line" and txn.metadata["store"] == "S1"
    assert txn.metadata["lineItems"][0]["category"] == "food, fresh"
    five = LedgerTransaction.objects.get(pk=result[4]["transaction_id"])
    assert five.metadata["occurredAt"] == "2030-03-14T09:30:00+00:00"
    imported = PurchaseImport.objects.get()
    assert (imported.status, imported.total_rows, imported.processed_rows) == ("completed", 7, 7)
    assert (imported.accepted, imported.rejected) == (3, 4)
    assert imported.finished_at is not None
    assert selectors.member_balance(member=member).balance == 24

    # When the same file is sent again
    before = factories.ledger_state()
    call_command(
        "import_purchases", partner.code, str(path), "--result", str(tmp_path / "again.csv"),
        "--sync", stdout=io.StringIO(),
    )  # fmt: skip

    # Then nothing was added: the accepted rows replay their transactions
    assert factories.ledger_state() == before
    again = read_result(tmp_path / "again.csv")
    assert [(r["status"], r["replayed"], r["transaction_id"]) for r in again] == [
        (r["status"], "yes" if r["status"] == "accepted" else "no", r["transaction_id"])
        for r in result
    ]
    # And a chunk run twice is counted once
    rerun = import_chunk_process(import_id=imported.pk, start_row=0, count=2)
    assert not rerun.counted
    imported.refresh_from_db()
    assert (imported.processed_rows, imported.accepted) == (7, 3)


@pytest.fixture
def chunks_sent(settings, monkeypatch) -> list[tuple]:
    """A real broker as the command sees it, but the chunk jobs sent to it are only kept
    here, as their task arguments, for the test to run (or not). No relay nudge is published
    to it: the test runs the outbox relay itself."""
    from partners import tasks

    settings.CELERY_TASK_ALWAYS_EAGER = False
    sent = []
    monkeypatch.setattr(
        tasks.import_purchases_chunk,
        "apply_async",
        lambda args=(), kwargs=None, **options: sent.append(tuple(args)),
    )
    monkeypatch.setattr("coalition.outbox.outbox_nudge", lambda: None)
    return sent


def test_import_through_the_workers(purchase_file, partner, chunks_sent,
                                    django_capture_on_commit_callbacks):  # fmt: skip
    # Given a real broker (tasks are not run here): the chunks are only sent
    from partners import tasks

    path, member = purchase_file
    out = io.StringIO()

    # When the file is imported without --sync, and the outbox relay runs (issue 9: the
    # chunk jobs are recorded with the import and sent by the relay)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("import_purchases", partner.code, str(path), "--chunk", "3", stdout=out)
    from coalition.outbox import outbox_relay

    assert outbox_relay() == 3

    # Then its 3 chunks were sent, and nothing was recorded yet
    imported = PurchaseImport.objects.get()
    assert "7 rows in 3 chunks sent to the workers" in out.getvalue()
    assert chunks_sent == [(imported.pk, 0, 3), (imported.pk, 3, 3), (imported.pk, 6, 1)]
    assert imported.status == "running" and imported.processed_rows == 0

    # When the workers run them (in any order)
    for args in reversed(chunks_sent):
        tasks.import_purchases_chunk(*args)

    # Then the import is complete, with its result file
    imported.refresh_from_db()
    assert (imported.status, imported.processed_rows, imported.accepted) == ("completed", 7, 2)
    assert len(read_result(imported.result_path)) == 7


@pytest.mark.parametrize(
    ("partner_code", "content", "message"),
    [
        ("NOSUCH", "idempotency_key,member_number,amount,currency,reference\n", "No partner"),
        (
            None,
            "idempotency_key,amount,currency\nk,1,USD\n",
            "missing columns: member_number, reference",
        ),
        (None, "", "the file is empty"),
        (None, None, "No such file"),
    ],
    ids=["unknown-partner", "missing-columns", "empty", "missing-file"],
)
def test_a_bad_file_is_refused_with_one_line(partner, tmp_path, capsys, monkeypatch,
                                             partner_code, content, message):  # fmt: skip
    from django.db import connections

    from partners.management.commands.import_purchases import Command

    # run_from_argv closes the connections when done: keep the test's own open
    monkeypatch.setattr(connections, "close_all", lambda: None)

    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("import_purchases", partner_code or partner.code, str(path), "--sync")
    # Run as from the shell: exit status 1, one line on standard error
    with pytest.raises(SystemExit) as exited:
        Command().run_from_argv(
            ["manage.py", "import_purchases", partner_code or partner.code, str(path), "--sync"]
        )
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not PurchaseImport.objects.exists()


def test_admin_upload_records_the_file_and_offers_its_result(
    purchase_file, partner, client, django_user_model, monkeypatch, import_folder,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    # Given an operator in the admin, and the day's file (tasks run in-process)
    path, member = purchase_file
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)
    operator = django_user_model.objects.create_superuser(username="ops", password="x-Str0ng-p")
    client.force_login(operator)
    add_url = reverse("admin:partners_purchaseimport_add")
    assert client.get(add_url).status_code == 200

    # When the file is uploaded
    upload = SimpleUploadedFile("eod.csv", path.read_bytes(), content_type="text/csv")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(add_url, {"partner": partner.pk, "chunk_size": 3, "upload": upload})

    # Then it was saved under the import folder and recorded, and its result can be fetched
    assert response.status_code == 302, response.content[:2000]
    imported = PurchaseImport.objects.get()
    assert imported.file_name == "eod.csv"
    assert imported.file_path.startswith(str(import_folder / "uploads"))
    assert (imported.status, imported.accepted, imported.rejected) == ("completed", 3, 4)
    listing = client.get(reverse("admin:partners_purchaseimport_changelist"))
    assert b"7/7" in listing.content and b"result CSV" in listing.content
    result = client.get(reverse("admin:partners_purchaseimport_result", args=[imported.pk]))
    rows = list(csv.DictReader(io.StringIO(b"".join(result.streaming_content).decode())))
    assert [row["status"] for row in rows].count("accepted") == 3

    # And a file without the required columns is refused on the form, and not kept
    bad = SimpleUploadedFile("bad.csv", b"idempotency_key,amount\nk,1\n", content_type="text/csv")
    response = client.post(add_url, {"partner": partner.pk, "chunk_size": 3, "upload": bad})
    assert response.status_code == 200
    assert b"bad.csv: missing columns: member_number, currency, reference" in response.content
    assert PurchaseImport.objects.count() == 1
    assert len(list((import_folder / "uploads").iterdir())) == 1


# --------------------------------------------------------------------------- volume


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_generate_volume_leaves_a_sound_ledger():
    out = io.StringIO()
    call_command(
        "generate_volume", "--members", "200", "--transactions", "2000", "--partners", "4",
        "--charities", "2", "--months", "3", "--force", stdout=out,
    )  # fmt: skip
    assert "rows/s" in out.getvalue()
    report = selectors.ledger_check()
    assert report.ok, report.problems[:5]
    assert Member.objects.count() == 200
    assert 2000 <= report.transactions
    kinds = set(LedgerTransaction.objects.values_list("kind", flat=True).distinct())
    assert {"earn", "burn", "donate", "expire"} <= kinds
    check = io.StringIO()
    call_command("check_ledger", stdout=check)
    assert "ledger ok" in check.getvalue()


def test_generate_volume_refuses_sqlite_or_a_database_not_for_benchmarks(db):
    with pytest.raises(CommandError, match="bench"):
        call_command("generate_volume", "--members", "1", "--transactions", "1")

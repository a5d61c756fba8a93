"""Ledger rules the database enforces whatever writes to it, proved with raw SQL that bypasses
the services; and `manage.py check_ledger`, which proves the invariants and names any breach."""

import io

import pytest
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connection, transaction

from coalition import selectors, services
from coalition.models import Account, Entry, LedgerTransaction, PointLot
from tests import factories


def insert_transaction(cursor, *, kind: str, member_id=None, reversal_of_id=None) -> int:
    cursor.execute(
        """
        INSERT INTO coalition_transaction
            (kind, member_id, member_points, reference, caller, request_hash,
             purchase_currency, reversal_of_id, created_at, metadata)
        VALUES (%s, %s, 0, '', 'raw:sql', '', '', %s, now(), '{}')
        RETURNING id
        """,
        [kind, member_id, reversal_of_id],
    )
    return cursor.fetchone()[0]


def insert_entries(cursor, *, transaction_id: int, legs: list[tuple[int, int]]) -> None:
    """A transaction's legs in one INSERT statement, as the services write them."""
    values = ", ".join(["(%s, %s, %s)"] * len(legs))
    params = [
        value for account_id, points in legs for value in (transaction_id, account_id, points)
    ]
    cursor.execute(
        f"INSERT INTO coalition_entry (transaction_id, account_id, points) VALUES {values}", params
    )


@pytest.fixture
def funded(member, partner):
    """A member with 100 points earned at the partner: (wallet, partner issued account, earn)."""
    earn = factories.earn(member, partner, 100)
    issued = Account.objects.get(kind=Account.Kind.PARTNER_ISSUED, partner=partner)
    return factories.wallet(member), issued, earn


# --------------------------------------------------------------------------- append-only
# Row triggers fire at once, so these also hold inside the test's own transaction and run on
# SQLite as well as PostgreSQL.


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE coalition_entry SET points = points * 2",
        "UPDATE coalition_entry SET account_id = account_id",
        "DELETE FROM coalition_entry",
        "UPDATE coalition_transaction SET reference = 'edited'",
        "UPDATE coalition_transaction SET member_points = 0",
        "DELETE FROM coalition_transaction",
    ],
)
def test_entries_and_transactions_can_never_be_changed_or_deleted(funded, statement):
    # Given a booked earn
    wallet, _, earn = funded
    entries_before = sorted(Entry.objects.values_list("id", "account_id", "points"))

    # When raw SQL edits or deletes ledger rows
    with pytest.raises(DatabaseError, match="coalition ledger"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)

    # Then the database refused it and the ledger is as it was
    assert sorted(Entry.objects.values_list("id", "account_id", "points")) == entries_before
    assert LedgerTransaction.objects.get(pk=earn.pk).reference == earn.reference
    assert selectors.ledger_check().ok


# --------------------------------------------------------------------------- balance


@pytest.mark.parametrize(
    ("legs", "message"),
    [
        ([("wallet", 10), ("issued", -5)], r"does not balance \(2 entries, sum 5\)"),
        ([("wallet", 10)], r"does not balance \(1 entries, sum 10\)"),
    ],
    ids=["unbalanced", "a single entry"],
)
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_entries_that_do_not_balance_their_transaction_are_refused(funded, legs, message):
    # Given a wallet with 100 points
    wallet, issued, _ = funded
    accounts = {"wallet": wallet.pk, "issued": issued.pk}
    txn_count = LedgerTransaction.objects.count()

    # When raw SQL inserts a transaction whose entries do not sum to zero over two legs
    with pytest.raises(IntegrityError, match=message):
        with transaction.atomic(), connection.cursor() as cursor:
            txn_id = insert_transaction(cursor, kind="earn", member_id=wallet.member_id)
            insert_entries(
                cursor,
                transaction_id=txn_id,
                legs=[(accounts[name], points) for name, points in legs],
            )

    # Then the INSERT itself was refused and nothing of it remains
    assert LedgerTransaction.objects.count() == txn_count
    assert factories.wallet(wallet.member).balance == 100
    assert selectors.ledger_check().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_transaction_without_entries_fails_at_commit(funded):
    # Given a wallet with 100 points
    wallet, _, _ = funded
    txn_count = LedgerTransaction.objects.count()
    inserted = False

    # When raw SQL inserts a transaction and no entries for it
    with pytest.raises(IntegrityError, match=r"does not balance \(0 entries, sum 0\)"):
        with transaction.atomic(), connection.cursor() as cursor:
            insert_transaction(cursor, kind="earn", member_id=wallet.member_id)
            inserted = True

    # Then the INSERT was accepted (the check is deferred), but the commit failed
    assert inserted
    assert LedgerTransaction.objects.count() == txn_count
    assert selectors.ledger_check().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_legs_written_one_statement_at_a_time_are_refused(funded):
    # Given a wallet with 100 points
    wallet, issued, _ = funded

    # When raw SQL writes a balanced earn's two legs in two INSERT statements
    with pytest.raises(IntegrityError, match=r"does not balance \(1 entries, sum 10\)"):
        with transaction.atomic(), connection.cursor() as cursor:
            txn_id = insert_transaction(cursor, kind="earn", member_id=wallet.member_id)
            insert_entries(cursor, transaction_id=txn_id, legs=[(wallet.pk, 10)])
            insert_entries(cursor, transaction_id=txn_id, legs=[(issued.pk, -10)])

    # Then the first statement was already refused: a transaction balances after every
    # statement that writes its entries, not only at commit
    assert factories.wallet(wallet.member).balance == 100


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_entries_added_later_to_a_balanced_transaction_must_keep_it_balanced(funded):
    # Given a wallet with 100 points from a committed earn
    wallet, issued, earn = funded

    # When raw SQL adds one more leg to that earn
    with pytest.raises(
        IntegrityError, match=r"transaction \d+ does not balance \(1 entries, sum 5\)"
    ):
        with transaction.atomic(), connection.cursor() as cursor:
            insert_entries(cursor, transaction_id=earn.pk, legs=[(wallet.pk, 5)])

    # Then the lone leg is refused: the earn balanced before, so with it the earn would not
    assert factories.wallet(wallet.member).balance == 100
    assert selectors.ledger_check().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_balanced_raw_transaction_commits_and_the_trigger_posts_it_to_the_wallet(funded):
    # Given a wallet with 100 points
    wallet, issued, _ = funded

    # When raw SQL books a balanced earn of 10 (two legs summing to zero)
    with transaction.atomic(), connection.cursor() as cursor:
        txn_id = insert_transaction(cursor, kind="earn", member_id=wallet.member_id)
        insert_entries(
            cursor,
            transaction_id=txn_id,
            legs=[(wallet.pk, 10), (issued.pk, -10)],
        )

    # Then it commits, and the database itself raised the wallet's cached balance
    assert LedgerTransaction.objects.filter(pk=txn_id).exists()
    assert factories.wallet(wallet.member).balance == 110


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_entry_of_zero_points_is_refused(funded):
    # Given a wallet with 100 points
    wallet, issued, _ = funded

    # When raw SQL inserts a zero-point entry
    with pytest.raises(IntegrityError, match="entry_points_not_zero"):
        with transaction.atomic(), connection.cursor() as cursor:
            txn_id = insert_transaction(cursor, kind="earn", member_id=wallet.member_id)
            insert_entries(cursor, transaction_id=txn_id, legs=[(wallet.pk, 0)])

    # Then nothing was booked
    assert Entry.objects.filter(points=0).count() == 0


# --------------------------------------------------------------------------- spend guard


@pytest.mark.parametrize("kind", ["burn", "donate", "expire", "adjustment"])
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_raw_spend_beyond_the_spendable_points_is_refused(funded, partner, kind):
    # Given a wallet with 100 points of which 60 are reserved by a hold
    wallet, issued, _ = funded
    factories.hold(wallet.member, partner, 60)

    # When raw SQL books a spend of 41 points, one more than is spendable
    with pytest.raises(IntegrityError, match="would overspend"):
        with transaction.atomic(), connection.cursor() as cursor:
            txn_id = insert_transaction(cursor, kind=kind, member_id=wallet.member_id)
            insert_entries(
                cursor,
                transaction_id=txn_id,
                legs=[(wallet.pk, -41), (issued.pk, 41)],
            )

    # Then the database refused it; 40 points, exactly what is spendable, go through
    assert factories.wallet(wallet.member).balance == 100
    with transaction.atomic(), connection.cursor() as cursor:
        txn_id = insert_transaction(cursor, kind=kind, member_id=wallet.member_id)
        insert_entries(
            cursor,
            transaction_id=txn_id,
            legs=[(wallet.pk, -40), (issued.pk, 40)],
        )
    assert factories.wallet(wallet.member).balance == 60


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_reversal_may_take_a_wallet_negative_where_a_spend_may_not(funded):
    # Given a wallet with 100 points from an earn
    wallet, issued, earn = funded

    # When raw SQL books a reversal taking 150 points
    with transaction.atomic(), connection.cursor() as cursor:
        txn_id = insert_transaction(
            cursor, kind="reversal", member_id=wallet.member_id, reversal_of_id=earn.pk
        )
        insert_entries(
            cursor,
            transaction_id=txn_id,
            legs=[(wallet.pk, -150), (issued.pk, 150)],
        )

    # Then the database accepts it: only a reversal may leave the wallet owing points
    assert factories.wallet(wallet.member).balance == -50


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_held_points_can_never_exceed_the_balance(funded):
    # Given a wallet with 100 points
    wallet, _, _ = funded

    # When raw SQL reserves 101 points
    with pytest.raises(IntegrityError, match="hold would reserve more"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE coalition_account SET held = 101 WHERE id = %s", [wallet.pk])

    # Then it is refused; reserving exactly the balance is allowed
    assert factories.wallet(wallet.member).held == 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE coalition_account SET held = 100 WHERE id = %s", [wallet.pk])
    assert factories.wallet(wallet.member).held == 100


# --------------------------------------------------------------------------- check_ledger


def run_check_ledger() -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        call_command("check_ledger", stdout=stdout, stderr=stderr)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.mark.django_db
def test_check_ledger_reports_an_intact_ledger(member, partner, other_partner, charity):
    # Given a ledger with earns, burns, a donation, a hold, a capture and a reversal
    earn = factories.earn(member, partner, 500)
    factories.burn(member, other_partner, 100)
    factories.donate(member, charity, 50)
    factories.capture(factories.hold(member, partner, 70), 20)
    factories.reverse(earn, 10)

    # When finance runs check_ledger
    code, stdout, stderr = run_check_ledger()

    # Then it reports every transaction and entry, and exits 0
    transactions, entries = LedgerTransaction.objects.count(), Entry.objects.count()
    assert (transactions, entries) == (5, 10)
    assert code == 0
    assert (
        stdout.strip().splitlines()[-1]
        == f"ledger ok: {transactions} transactions, {entries} entries"
    )
    assert stderr == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("breakage", "invariant"),
    [
        (
            "UPDATE coalition_account SET balance = balance + 5 WHERE id = {wallet}",
            "wallet cached balance differs from its entries: {wallet}, 435, 430",
        ),
        (
            "UPDATE coalition_lot SET remaining = remaining - 1 WHERE member_id = {member}",
            "wallet lots do not hold its positive balance: {wallet}, 430, 429",
        ),
        (
            "UPDATE coalition_hold SET status = 'voided' WHERE member_id = {member}",
            "wallet held points differ from its active holds: {wallet}, 70, 0",
        ),
    ],
)
def test_check_ledger_names_a_broken_invariant_and_exits_1(member, partner, breakage, invariant):
    # Given an intact ledger: 500 earned, 70 burned, 70 held
    factories.earn(member, partner, 500)
    factories.burn(member, partner, 70)
    factories.hold(member, partner, 70)
    wallet = factories.wallet(member)
    assert run_check_ledger()[0] == 0

    # When a cached figure is broken behind the services' back (allowed by the database)
    with connection.cursor() as cursor:
        cursor.execute(breakage.format(wallet=wallet.pk, member=member.pk))

    # Then check_ledger lists the broken invariant and exits 1
    code, stdout, stderr = run_check_ledger()
    assert code == 1
    assert invariant.format(wallet=wallet.pk) in stderr.splitlines()
    assert stdout.strip().startswith("ledger broken:")
    assert not selectors.ledger_check().ok


# --------------------------------------------------------------------------- references


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_entries_must_point_at_a_transaction_and_accounts_that_exist(funded):
    # Given a wallet with 100 points and an account id nobody has
    wallet, issued, _ = funded
    missing_account = Account.objects.order_by("-id").first().pk + 1000

    # When raw SQL writes balanced legs for a transaction that does not exist
    with pytest.raises(IntegrityError, match="which does not exist"):
        with transaction.atomic(), connection.cursor() as cursor:
            insert_entries(cursor, transaction_id=10**12, legs=[(wallet.pk, 10), (issued.pk, -10)])
    # or legs on an account that does not exist
    with pytest.raises(IntegrityError, match=f"account {missing_account}, which does not"):
        with transaction.atomic(), connection.cursor() as cursor:
            txn_id = insert_transaction(cursor, kind="earn", member_id=wallet.member_id)
            insert_entries(
                cursor, transaction_id=txn_id, legs=[(wallet.pk, 10), (missing_account, -10)]
            )

    # Then both were refused and the ledger is as it was
    assert factories.wallet(wallet.member).balance == 100
    assert selectors.ledger_check().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_lot_must_point_at_a_member_and_a_transaction_that_exist(funded):
    wallet, _, earn = funded

    # When raw SQL writes a lot for a member that does not exist
    with pytest.raises(IntegrityError, match="which does not exist"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO coalition_lot (member_id, transaction_id, points, remaining, "
                "created_at) VALUES (%s, %s, 5, 5, now())",
                [10**12, earn.pk],
            )

    # Then it was refused
    assert not PointLot.objects.filter(member_id=10**12).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "column, named",
    [
        ("member_id", "member"),
        ("partner_id", "partner"),
        ("charity_id", "charity"),
        ("hold_id", "hold"),
        ("reversal_of_id", "transaction"),
    ],
)
def test_a_transaction_must_name_parents_that_exist(funded, column, named):
    # Given a funded wallet
    wallet, issued, _ = funded
    transactions_before = LedgerTransaction.objects.count()

    # When raw SQL writes a transaction naming a parent nobody has
    references = {"member_id": wallet.member_id, column: 10**12}
    with pytest.raises(IntegrityError, match=f"names {named} {10**12}, which does not exist"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO coalition_transaction
                    (kind, {", ".join(references)}, member_points, reference, caller,
                     request_hash, purchase_currency, created_at, metadata)
                VALUES ('adjustment', {", ".join(["%s"] * len(references))}, 0, '', 'raw:sql',
                        '', '', now(), '{{}}')
                """,
                list(references.values()),
            )

    # Then it was refused at once and nothing was written
    assert LedgerTransaction.objects.count() == transactions_before
    assert selectors.ledger_check().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_lot_must_belong_to_the_member_of_its_transaction(funded):
    # Given a member's earn and another member
    wallet, _, earn = funded
    other = factories.member()

    # When raw SQL writes a lot of the other member from that earn
    with pytest.raises(IntegrityError, match="is not that member's"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO coalition_lot (member_id, transaction_id, points, remaining, "
                "created_at) VALUES (%s, %s, 5, 5, now())",
                [other.pk, earn.pk],
            )

    # Then it was refused
    assert not PointLot.objects.filter(member=other).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_members_partners_charities_and_holds_named_by_transactions_cannot_be_deleted(
    funded, partner, charity
):
    # Given a partner with an earn, a charity with a donation and a captured hold
    wallet, _, _ = funded
    member = wallet.member
    factories.donate(member, charity, 10)
    hold = factories.hold(member, partner, 20)
    factories.capture(hold)

    # and a member named by a transaction who holds no lot
    named = factories.member()
    issued = Account.objects.get(kind=Account.Kind.PARTNER_ISSUED, partner=partner)
    adjustment = services.system_account_id(Account.Kind.OPERATOR_ADJUSTMENT)
    with transaction.atomic(), connection.cursor() as cursor:
        txn_id = insert_transaction(cursor, kind="adjustment", member_id=named.pk)
        insert_entries(cursor, transaction_id=txn_id, legs=[(adjustment, 10), (issued.pk, -10)])

    # When raw SQL deletes them
    for statement, params, message in [
        ("DELETE FROM coalition_member WHERE id = %s", [named.pk], "member"),
        ("DELETE FROM partners_partner WHERE id = %s", [partner.pk], "partner"),
        ("DELETE FROM charity_charity WHERE id = %s", [charity.pk], "charity"),
        ("DELETE FROM coalition_hold WHERE id = %s", [hold.pk], "hold"),
    ]:
        with pytest.raises(IntegrityError, match=f"{message} \\d+ has transactions"):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(statement, params)

    # Then all four are still there and the ledger still ties
    assert type(named).objects.filter(pk=named.pk).exists()
    assert type(partner).objects.filter(pk=partner.pk).exists()
    assert type(charity).objects.filter(pk=charity.pk).exists()
    assert type(hold).objects.filter(pk=hold.pk).exists()
    assert selectors.ledger_check().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_accounts_with_entries_and_members_with_lots_cannot_be_deleted(funded):
    # Given a wallet with 100 points from an earn (entries on it, a lot of its member)
    wallet, issued, _ = funded

    # When raw SQL deletes the partner's issued account, or the member
    for statement, params, message in [
        ("DELETE FROM coalition_account WHERE id = %s", [issued.pk], "has entries"),
        ("DELETE FROM coalition_member WHERE id = %s", [wallet.member_id], "has point lots"),
    ]:
        with pytest.raises(IntegrityError, match=message):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(statement, params)

    # Then both are still there and the ledger still ties
    assert Account.objects.filter(pk=issued.pk).exists()
    assert selectors.ledger_check().ok

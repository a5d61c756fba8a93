"""`generate_volume` streams: with many small chunks (slices COPYed one at a time, used-up
lots written with their slice, open lots at the end) the ledger it leaves is still sound."""

import io

import pytest
from django.core.management import call_command
from django.db import connection

from charity.models import Donation
from coalition import selectors
from coalition.management.commands import generate_volume
from coalition.models import Account, LedgerTransaction, Member, PointLot


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_generate_volume_in_small_chunks_leaves_a_sound_ledger(monkeypatch):
    monkeypatch.setattr(generate_volume, "CHUNK", 97)
    out = io.StringIO()
    call_command(
        "generate_volume", "--members", "150", "--transactions", "3000", "--partners", "3",
        "--charities", "2", "--months", "2", "--seed", "11", "--force", stdout=out,
    )  # fmt: skip
    assert "rows/s" in out.getvalue()
    report = selectors.ledger_check()
    assert report.ok, report.problems[:5]
    assert Member.objects.count() == 150
    assert report.transactions >= 3000
    # Every earn has exactly one lot, written once (used up or still open).
    earns = LedgerTransaction.objects.filter(kind="earn").count()
    assert PointLot.objects.count() == earns
    assert PointLot.objects.values("transaction_id").distinct().count() == earns
    # Every donation has its row, with unique receipt numbers across the chunks.
    donates = LedgerTransaction.objects.filter(kind="donate").count()
    assert donates > 0
    assert Donation.objects.count() == donates
    assert Donation.objects.values("receipt_number").distinct().count() == donates
    # The open lots of each wallet add up to its balance, and lots spent = points spent.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM coalition_account a
              LEFT JOIN (SELECT member_id, sum(remaining) AS open FROM coalition_lot
                          GROUP BY member_id) l ON l.member_id = a.member_id
             WHERE a.kind = %s AND a.balance <> COALESCE(l.open, 0)
            """,
            [Account.Kind.MEMBER_WALLET],
        )
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM coalition_lot WHERE remaining < 0")
        assert cursor.fetchone()[0] == 0

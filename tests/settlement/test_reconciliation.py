"""Reconciliation against what the emulator holds: a clean run says so; a planted extra
transfer, a planted amount mismatch, a payment to the wrong place are each found."""

import io

import pytest
from django.core.management import call_command

from settlement import selectors, services
from settlement.models import Reconciliation
from tests.settlement.conftest import collection_of, kinds

pytestmark = pytest.mark.django_db


def test_a_clean_run_says_so(executed_run):
    # The run's own reconciliation (the Celery job after execution)...
    automatic = selectors.reconciliation_latest(run=executed_run)
    assert automatic.clean and automatic.differences == []
    assert automatic.checked_lines == 3 and automatic.stripe_objects == 3

    # ...and the command.
    out = io.StringIO()
    call_command("reconcile_settlement", str(executed_run.pk), stdout=out)

    assert (
        out.getvalue()
        .strip()
        .splitlines()[-1]
        .startswith(f"run {executed_run.pk} reconciled clean")
    )
    assert Reconciliation.objects.filter(run=executed_run).count() == 2


def test_a_planted_extra_transfer_is_found(stripe_bed, executed_run):
    stranger = stripe_bed.account()
    extra = stripe_bed.client.v1.transfers.create(
        {
            "amount": 1234,
            "currency": "usd",
            "destination": stranger,
            "transfer_group": executed_run.transfer_group,
        }
    )

    result = services.run_reconcile(run=executed_run)

    assert not result.clean
    assert kinds(result) == [("extra", extra.id)]
    assert "12" in result.differences[0]["actual"] and stranger in result.differences[0]["actual"]


def test_a_planted_amount_mismatch_is_found(stripe_bed, executed_run):
    payout = executed_run.lines.get(partner__code="REDEEMER")
    # 5.00 of the 40.00 taken back at Stripe, behind settlement's back.
    stripe_bed.client.v1.transfers.reversals.create(payout.stripe_object_id, {"amount": 500})

    result = services.run_reconcile(run=executed_run)

    assert kinds(result) == [("amount_mismatch", payout.stripe_object_id)]
    difference = result.differences[0]
    assert (difference["line"], difference["expected"], difference["actual"]) == (
        payout.pk,
        "4000 USD",
        "3500 USD",
    )


def test_our_books_differing_from_stripe_is_found(executed_run):
    """The same mismatch seen from the other side: the line's amount was changed."""
    charity_line = executed_run.lines.get(charity__isnull=False)
    type(charity_line).objects.filter(pk=charity_line.pk).update(
        rounded_amount="25.00", net_amount="25.00"
    )

    result = services.run_reconcile(run=executed_run)

    assert kinds(result) == [("amount_mismatch", charity_line.stripe_object_id)]


def test_a_missing_transfer_and_a_wrong_destination_are_found(executed_run):
    payout = executed_run.lines.get(partner__code="REDEEMER")
    charity_line = executed_run.lines.get(charity__isnull=False)
    type(payout).objects.filter(pk=payout.pk).update(stripe_object_id="tr_nothing", reference=(
        "00000000-0000-0000-0000-000000000000"
    ))  # fmt: skip
    charity = charity_line.charity
    charity.stripe_account_id = "acct_elsewhere"
    charity.save()

    result = services.run_reconcile(run=executed_run)

    found = {d["kind"] for d in result.differences}
    assert found == {"missing", "extra", "destination_mismatch"}


def test_the_command_lists_differences_and_exits_non_zero(stripe_bed, executed_run):
    stripe_bed.client.v1.transfers.create(
        {
            "amount": 100,
            "currency": "usd",
            "destination": stripe_bed.account(),
            "transfer_group": executed_run.transfer_group,
        }
    )
    out = io.StringIO()

    with pytest.raises(SystemExit) as exited:
        call_command("reconcile_settlement", str(executed_run.pk), stdout=out)

    assert exited.value.code == 1
    lines = out.getvalue().strip().splitlines()
    assert lines[0].startswith("extra:") and lines[-1].endswith("1 difference(s)")


def test_the_command_refuses_an_unknown_run(stripe_bed):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No such settlement run"):
        call_command("reconcile_settlement", "999999")


def test_a_second_collection_naming_the_run_is_found(stripe_bed, executed_run):
    double = stripe_bed.collect_again(executed_run, collection_of(executed_run), 20000)

    result = services.run_reconcile(run=executed_run)

    assert kinds(result) == [("duplicate", double.id)]

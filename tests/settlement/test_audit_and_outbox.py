"""Settlement and the issue-9 guarantees: every staff move of a run or line is in the audit
trail (who, what, when, before and after), the system's own moves are not attributed to
anyone, and the jobs that follow a move (execution, reconciliation) go through the outbox,
so a broker outage at approval or execution time loses nothing and pays nothing twice."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model

from coalition import outbox
from coalition.models import AuditEvent, OutboxMessage
from settlement import services
from settlement.errors import CoalitionError as SettlementError
from settlement.models import SettlementLine, SettlementRun
from tests import factories
from tests.reliability.conftest import broker_down, celery_broker
from tests.settlement.conftest import days, make_partner

Status = SettlementRun.Status


def trail(**filters) -> list[tuple]:
    return [
        (event.action, event.actor_label, event.before, event.after)
        for event in AuditEvent.objects.filter(**filters).order_by("id")
    ]


@pytest.fixture
def draft(settlement_programme, base_time, post, finance):
    partner = make_partner("AUDITED", issuance="0.01", redemption="0.008",
                           valid_from=base_time - days(9))  # fmt: skip
    post.earn(factories.member(), partner, 5_000, base_time - days(3))
    return services.run_create(period_end=base_time - timedelta(seconds=1), created_by=finance)


def test_creating_approving_and_discarding_runs_is_audited(
    draft, finance, approver, settlement_programme, base_time, django_capture_on_commit_callbacks
):
    run_type = {"object_type": "settlement.settlementrun", "object_id": str(draft.pk)}
    # Created by the clerk
    created = AuditEvent.objects.get(action="settlement.run.draft", **run_type)
    assert created.actor == finance and created.before is None
    assert created.after["status"] == "draft" and created.after["periodEnd"]

    # Approved by the controller (the statement announcement waits in the outbox)
    with django_capture_on_commit_callbacks(execute=False):
        services.run_approve(run=draft, approved_by=approver)
    approved = AuditEvent.objects.get(action="settlement.run.approved", **run_type)
    assert (approved.actor, approved.before, approved.after) == (
        approver,
        {"status": "draft"},
        {"status": "approved", "periodEnd": draft.period_end.isoformat()},
    )
    assert approved.created_at is not None

    # A refused move writes nothing to the trail
    events = AuditEvent.objects.count()
    with pytest.raises(SettlementError):
        services.run_discard(run=draft, discarded_by=finance, reason="too late")
    assert AuditEvent.objects.count() == events


def test_a_discarded_draft_is_audited_with_the_reason(draft, finance):
    services.run_discard(run=draft, discarded_by=finance, reason="wrong cut-off")

    assert trail(action="settlement.run.discarded") == [
        ("settlement.run.discarded", "clerk", {"status": "draft"},
         {"status": "discarded", "note": "wrong cut-off",
          "periodEnd": draft.period_end.isoformat()}),
    ]  # fmt: skip


def test_a_refused_action_by_a_non_staff_user_is_not_audited(draft):
    outsider = get_user_model().objects.create_user(username="outsider")
    with pytest.raises(SettlementError):
        services.run_approve(run=draft, approved_by=outsider)
    assert not AuditEvent.objects.filter(action="settlement.run.approved").exists()


def test_execution_retry_and_carry_forward_are_audited_and_stripe_moves_are_not_staff(
    stripe_bed, stripe_month, finance, approver, django_capture_on_commit_callbacks
):
    # Given an approved run whose collection is declined
    run = stripe_month["run"]
    issuer = stripe_month["issuer"]
    stripe_bed.set_card(issuer.stripe_customer_id, "pm_card_chargeCustomerFail")
    redeemer = stripe_month["redeemer"]
    redeemer.stripe_account_id = "acct_doesnotexist"
    redeemer.save()

    # When the clerk executes it
    with django_capture_on_commit_callbacks(execute=True):
        services.run_execute(run=run, started_by=finance)
    run.refresh_from_db()
    assert run.status == Status.PARTIALLY_FAILED

    # then the start is the clerk's, and what Stripe answered is nobody's staff action
    assert trail(action="settlement.run.executing") == [
        ("settlement.run.executing", "clerk", {"status": "approved"},
         {"status": "executing", "periodEnd": run.period_end.isoformat()}),
    ]  # fmt: skip
    assert not AuditEvent.objects.filter(action__startswith="settlement.line.failed").exists()
    assert not AuditEvent.objects.filter(action="settlement.run.partially_failed").exists()

    # When the controller retries the collection and carries the pay-out forward
    collection = run.lines.get(partner=issuer)
    payout = run.lines.get(partner=redeemer)
    stripe_bed.set_card(issuer.stripe_customer_id, "pm_card_visa")
    with django_capture_on_commit_callbacks(execute=True):
        services.line_retry(line=collection, user=approver)
    services.line_carry_forward(line=payout, user=approver, reason="no Stripe account yet")

    # then both are in the trail with the line's status before and after
    retried = AuditEvent.objects.get(action="settlement.line.pending")
    assert (retried.actor, retried.object_id) == (approver, str(collection.pk))
    assert retried.before == {"status": "failed"}
    assert retried.after["status"] == "pending" and retried.after["attempt"] == 2
    # (the declined attempt's intent is cancelled at Stripe first, so it can never succeed)
    assert (
        retried.after["note"]
        == f"retry, attempt 2; cancelled {collection.stripe_object_id} at Stripe"
    )
    carried = AuditEvent.objects.get(action="settlement.line.carried_forward")
    assert (carried.actor, carried.object_type) == (approver, "settlement.settlementline")
    assert carried.before == {"status": "failed"}
    assert carried.after["note"] == "no Stripe account yet"
    assert carried.after["counterparty"] == payout.counterparty_label
    # and so is the run's move back to executing for the retry, and its completion by the
    # carry-forward.
    assert [(e.action, e.actor) for e in AuditEvent.objects.filter(
        object_type="settlement.settlementrun", object_id=str(run.pk)
    ).order_by("id")][-2:] == [
        ("settlement.run.executing", approver),
        ("settlement.run.completed", approver),
    ]  # fmt: skip


def test_admin_actions_on_runs_are_audited(client, draft, approver):
    approver.is_superuser = True
    approver.save()
    client.force_login(approver)

    client.post(
        "/admin/settlement/settlementrun/",
        {"action": "approve", "_selected_action": [draft.pk]},
    )

    draft.refresh_from_db()
    assert draft.status == Status.APPROVED
    # The admin action, with the run's fields before and after, and the service's own event
    action = AuditEvent.objects.get(action="admin.action:approve")
    assert action.actor == approver
    assert (action.before["status"], action.after["status"]) == ("draft", "approved")
    assert AuditEvent.objects.filter(action="settlement.run.approved", actor=approver).exists()
    # and the trail is readable in the admin.
    page = client.get("/admin/coalition/auditevent/")
    assert page.status_code == 200 and b"settlement.run.approved" in page.content


# --------------------------------------------------------------------------- the outbox


def test_execution_started_while_the_broker_is_down_runs_once_when_it_is_back(
    stripe_bed, stripe_month, finance
):
    run = stripe_month["run"]

    # When finance starts the run while the broker is down (and the relay tries meanwhile)
    with broker_down():
        services.run_execute(run=run, started_by=finance)
        assert outbox.outbox_relay() == 0

    # then the run is executing, nothing went to Stripe, and the job waits in the outbox
    run.refresh_from_db()
    assert run.status == Status.EXECUTING
    assert stripe_bed.transfers(run.transfer_group) == []
    waiting = [row.payload for row in OutboxMessage.objects.filter(dispatched_at__isnull=True)]
    assert {"task": "settlement.tasks.execute_run", "args": [run.pk], "kwargs": {}} in waiting

    # When the broker is back and the relay runs (twice)
    with celery_broker(None, eager=True):
        assert outbox.outbox_relay() >= 1
        assert outbox.outbox_relay() == 0

    # then every line is paid once, and the reconciliation that follows ran once.
    run.refresh_from_db()
    assert run.status == Status.COMPLETED
    assert all(line.status == SettlementLine.Status.PAID for line in run.lines.all())
    assert len(stripe_bed.transfers(run.transfer_group)) == 2
    assert run.reconciliations.count() == 1 and run.reconciliations.get().clean
    assert not OutboxMessage.objects.filter(dispatched_at__isnull=True).exists()

"""Charity and members' personal data (issue 9): the export holds the member's giving
choices and donations; erasure removes the choices and the portal sessions, keeps every
donation, receipt and ledger entry, and an erased member is mailed nothing. Staff actions
on charities and donations are in the audit trail."""

from __future__ import annotations

import json

import pytest
from django.contrib.sessions.models import Session
from django.core import mail
from django.test import Client

from charity import services
from charity.errors import CoalitionError
from charity.models import Donation, GivingPreference
from charity.tasks import email_receipt
from coalition import outbox
from coalition import services as coalition
from coalition.models import AuditEvent, LedgerTransaction, OutboxMessage
from coalition.selectors import ledger_check
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def giver(rich_member, charity):
    """A member with giving choices, a donation and a portal session."""
    services.giving_preferences_update(
        member=rich_member, round_up_charity=charity, round_up_percent=10, expiry_charity=charity
    )
    donation = factories.give(rich_member, charity, 250)
    return rich_member, donation


def portal_login(member) -> Client:
    coalition.member_set_password(member=member, password="Giving-2026!")
    browser = Client()
    response = browser.post(
        "/portal/login/", {"email": member.email, "password": "Giving-2026!", "next": "/portal/"}
    )
    assert response.status_code == 302, response.content
    return browser


def test_the_export_holds_the_giving_choices_and_the_donations(giver, charity):
    member, donation = giver

    export = coalition.member_export(member)

    assert json.loads(json.dumps(export)) == export
    [preference] = export["related"]["charity.GivingPreference"]
    assert (preference["round_up_charity_id"], preference["round_up_percent"]) == (charity.pk, 10)
    assert preference["expiry_charity_id"] == charity.pk
    [given] = export["related"]["charity.Donation"]
    assert (given["receipt_number"], given["points"]) == (donation.receipt_number, 250)


def test_erasure_removes_the_giving_choices_and_sessions_and_keeps_the_donations(
    giver, charity, staff_user
):
    member, donation = giver
    browser = portal_login(member)
    assert browser.get("/portal/").status_code == 200
    other = factories.member()
    other_browser = portal_login(other)
    donations_before = list(Donation.objects.values())
    transactions_before = LedgerTransaction.objects.count()

    coalition.member_erase(member=member, staff_user=staff_user)

    # The choices went: no more round-up on earn, nothing given instead of expiry.
    assert not GivingPreference.objects.filter(member=member).exists()
    # The donations, their receipts and the ledger stay exactly as they were.
    assert list(Donation.objects.values()) == donations_before
    assert LedgerTransaction.objects.count() == transactions_before + 1  # the forfeit
    report = ledger_check()
    assert report.ok, report.problems
    # The portal session of the erased member is gone; another member's is kept.
    assert browser.get("/portal/").status_code == 302
    member_sessions = [s.get_decoded().get("coalition_member_id") for s in Session.objects.all()]
    assert member.pk not in member_sessions and other.pk in member_sessions
    assert other_browser.get("/portal/").status_code == 200
    # The trail says what was removed, never the data itself.
    event = AuditEvent.objects.get(action="member.erase")
    assert event.after["removed"]["charity.privacy.member_giving_erase"] == 1
    assert event.after["removed"]["web.privacy.member_sessions_erase"] == 1


def test_a_receipt_still_waiting_is_not_mailed_to_an_erased_member(
    rich_member, charity, staff_user, monkeypatch
):
    # Given a donation whose receipt job is still in the outbox (the relay has not run)
    monkeypatch.setattr(outbox, "outbox_nudge", lambda: None)
    donation = factories.give(rich_member, charity, 200)
    assert OutboxMessage.objects.filter(payload__task="charity.tasks.email_receipt").exists()

    # When the member is erased, and only then the relay runs
    coalition.member_erase(member=rich_member, staff_user=staff_user)
    mail.outbox.clear()
    outbox.outbox_relay()

    # then no mail went to anybody, and the donation is intact.
    assert mail.outbox == []
    assert email_receipt(donation.pk) is False
    assert Donation.objects.get(pk=donation.pk).receipt_number == donation.receipt_number


def test_the_receipt_is_mailed_once_however_often_the_job_runs(rich_member, charity):
    donation = factories.give(rich_member, charity, 200)  # (eager: the relay runs on commit)
    mail.outbox.clear()
    Donation.objects.filter(pk=donation.pk).update(receipt_emailed_at=None)

    assert [email_receipt(donation.pk) for _ in range(3)] == [True, False, False]
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [rich_member.email]


# --------------------------------------------------------------------------- audit


def test_a_charity_status_change_by_staff_is_audited(charity, staff_user):
    services.charity_set_status(
        charity=charity, status="suspended", changed_by=staff_user, reason="under review"
    )

    event = AuditEvent.objects.get(action="charity.set_status")
    assert (event.actor, event.object_type, event.object_id) == (
        staff_user,
        "charity.charity",
        str(charity.pk),
    )
    assert event.before == {"status": "verified"}
    assert event.after == {"status": "suspended", "reason": "under review"}


def test_a_refused_status_change_is_not_audited(charity, staff_user):
    with pytest.raises(CoalitionError):  # a verified charity cannot go back to pending
        services.charity_set_status(charity=charity, status="pending", changed_by=staff_user)
    assert not AuditEvent.objects.filter(action="charity.set_status").exists()


def test_a_donation_refund_is_audited(rich_member, charity, staff_user):
    donation = factories.give(rich_member, charity, 300)

    refunded = services.donation_refund(
        donation=donation, refunded_by=staff_user, reason="given by mistake"
    )

    event = AuditEvent.objects.get(action="donation.refund")
    assert event.actor == staff_user and event.object_id == str(donation.pk)
    assert event.before == {"refunded": False, "points": 300, "matchedPoints": 0}
    assert event.after == {
        "refunded": True,
        "reason": "given by mistake",
        "refundTransaction": refunded.refund_transaction_id,
        "matchRefundTransaction": None,
    }

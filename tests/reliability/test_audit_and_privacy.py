"""The audit trail of staff and operator actions, and members' personal data: export and
erasure (issue 9)."""

from __future__ import annotations

import json

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError

from api.core.auth import member_token_issue, member_token_verify
from coalition import services
from coalition.audit import audit_record
from coalition.models import (
    Account,
    AuditEvent,
    LedgerTransaction,
    Member,
    RedemptionHold,
    Tier,
    TierChange,
)
from coalition.selectors import ledger_check
from partners.models import PartnerIdentity
from partners.services import identity_link
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser(username="operator", password="x-Str0ng-pass")


@pytest.fixture
def operator(client, admin_user):
    client.force_login(admin_user)
    return client


# --------------------------------------------------------------------------- audit: services


def test_an_adjustment_is_audited_with_the_balance_before_and_after(member, staff_user):
    factories.earn(member, factories.PartnerFactory(), 100)

    txn = services.points_adjust(
        staff_user=staff_user,
        member=member,
        points=-30,
        reason="goodwill fix",
        idempotency_key="a1",
    )

    event = AuditEvent.objects.get(action="points.adjust")
    assert (event.actor, event.actor_label) == (staff_user, "finance")
    assert (event.object_type, event.object_id) == ("coalition.member", str(member.pk))
    assert event.before == {"balance": 100}
    assert event.after == {
        "balance": 70,
        "points": -30,
        "reason": "goodwill fix",
        "transaction": txn.pk,
    }


def test_a_replayed_adjustment_is_audited_once(member, staff_user):
    for _ in range(2):
        services.points_adjust(
            staff_user=staff_user, member=member, points=10, reason="r", idempotency_key="same"
        )
    assert AuditEvent.objects.filter(action="points.adjust").count() == 1


def test_a_status_change_by_staff_is_audited(member, staff_user):
    services.member_set_status(member=member, status="suspended", staff_user=staff_user)

    event = AuditEvent.objects.get(action="member.set_status")
    assert (event.before, event.after) == ({"status": "active"}, {"status": "suspended"})


# --------------------------------------------------------------------------- audit: admin


def test_admin_additions_and_changes_are_audited_with_before_and_after(operator, admin_user):
    form = {"code": "GOLD", "name": "Gold", "qualifying_points": "1000", "earn_multiplier": "1.5"}
    assert operator.post("/admin/coalition/tier/add/", form).status_code == 302
    tier = Tier.objects.get(code="GOLD")
    changed = {**form, "name": "Gold+", "earn_multiplier": "2"}
    assert operator.post(f"/admin/coalition/tier/{tier.pk}/change/", changed).status_code == 302

    added, change = AuditEvent.objects.order_by("id")
    assert (added.action, added.actor, added.before) == ("admin.add", admin_user, None)
    assert added.after["name"] == "Gold"
    assert change.action == "admin.change" and change.object_id == str(tier.pk)
    assert (change.before["name"], change.after["name"]) == ("Gold", "Gold+")
    assert (change.before["earn_multiplier"], change.after["earn_multiplier"]) == ("1.500", "2.000")


def test_admin_bulk_actions_are_audited_per_object(operator, member, other_partner):
    response = operator.post(
        "/admin/coalition/member/",
        {"action": "suspend", "_selected_action": [member.pk]},
    )
    assert response.status_code == 302

    event = AuditEvent.objects.get(action="admin.action:suspend")
    assert event.object_id == str(member.pk)
    assert (event.before["status"], event.after["status"]) == ("active", "suspended")


def test_the_trail_never_holds_a_members_personal_data(operator, member, staff_user):
    """The trail is append-only, so an erasure could not reach what it holds: a member's
    email, name, birth date and referral code are kept there as keyed pseudonyms (equal
    values, equal pseudonyms: a change still shows)."""
    email, name = member.email, member.display_name
    operator.post(
        "/admin/coalition/member/", {"action": "suspend", "_selected_action": [member.pk]}
    )
    event = AuditEvent.objects.get(action="admin.action:suspend")
    assert event.before["email"].startswith("[personal:")
    assert event.before["email"] == event.after["email"]  # unchanged, and shown as such

    services.member_erase(member=member, staff_user=staff_user)

    trail = json.dumps(list(AuditEvent.objects.values("actor_label", "before", "after")))
    assert email not in trail and name not in trail
    # (the member's own export still shows them their data in clear)


def test_partner_admin_changes_are_audited(operator, programme):
    partner, _ = factories.onboarded_partner()

    operator.post(
        "/admin/partners/partner/", {"action": "suspend", "_selected_action": [partner.pk]}
    )

    event = AuditEvent.objects.get(object_type="partners.partner", object_id=str(partner.pk))
    assert (event.action, event.actor_label) == ("admin.action:suspend", "operator")
    assert (event.before["status"], event.after["status"]) == ("active", "suspended")


def test_every_admin_is_audited():
    from django.contrib import admin

    unaudited = [
        model._meta.label
        for model, model_admin in admin.site._registry.items()
        if not getattr(model_admin, "coalition_audited", False)
    ]
    assert sorted(unaudited) == ["coalition.AuditEvent", "coalition.OutboxMessage"]


def test_the_trail_is_viewable_and_read_only_in_the_admin(operator, member, staff_user):
    services.member_set_status(member=member, status="suspended", staff_user=staff_user)
    event = AuditEvent.objects.get()

    assert operator.get("/admin/coalition/auditevent/").status_code == 200
    detail = operator.get(f"/admin/coalition/auditevent/{event.pk}/change/")
    assert detail.status_code == 200 and b"member.set_status" in detail.content
    assert operator.get("/admin/coalition/auditevent/add/").status_code == 403
    assert operator.post(f"/admin/coalition/auditevent/{event.pk}/delete/").status_code == 403


def test_secrets_are_never_copied_into_the_trail(operator, programme):
    from partners.models import ApiKey

    partner, raw_key = factories.onboarded_partner()
    key = ApiKey.objects.get(partner=partner)
    operator.post(
        "/admin/partners/apikey/",
        {"action": "delete_selected", "_selected_action": [key.pk], "post": "yes"},
    )
    trail = json.dumps(list(AuditEvent.objects.values("before", "after")))
    assert key.digest not in trail and raw_key not in trail


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_trail_is_append_only_in_the_database(staff_user):
    event = audit_record(actor=staff_user, action="test", object_type="x", object_id=1)

    for statement in (
        "UPDATE coalition_audit_event SET action = 'forged'",
        "DELETE FROM coalition_audit_event",
    ):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    event.refresh_from_db()
    assert event.action == "test"


# --------------------------------------------------------------------------- personal data


@pytest.fixture
def known_member(programme, charity, staff_user):
    """A member the programme knows a lot about: earns, a burn, a hold, a tier change, a
    donation, a partner identity."""
    partner, _ = factories.onboarded_partner()
    Tier.objects.create(code="BASE", name="Base", qualifying_points=0)
    Tier.objects.create(code="SILVER", name="Silver", qualifying_points=500)
    member = factories.member(password="correct-horse-battery", birth_date="1985-04-12")
    factories.earn(member, partner, 800)
    services.member_tier_upgrade(member=member)
    factories.burn(member, partner, 100)
    factories.hold(member, partner, 50)
    from charity.services import donation_create

    donation_create(member=member, charity=charity, points=200, idempotency_key="give")
    identity_link(partner=partner, member=member, customer_reference="LOYAL-0042")
    return member


def test_the_export_holds_everything_about_the_member(known_member):
    export = services.member_export(known_member)

    assert json.loads(json.dumps(export)) == export  # JSON as it is
    assert export["profile"]["email"] == known_member.email
    assert export["profile"]["birthDate"] == "1985-04-12"
    assert export["profile"]["hasPassword"] is True and "password" not in json.dumps(
        export["profile"]
    ).replace("hasPassword", "")
    assert export["wallet"] == {
        "balance": 500,
        "held": 50,
        "spendable": 450,
        "lastActivityAt": export["wallet"]["lastActivityAt"],
    }
    assert [txn["kind"] for txn in export["transactions"]] == ["earn", "burn", "donate"]
    assert all(sum(e["points"] for e in txn["entries"]) == 0 for txn in export["transactions"])
    assert export["lots"] and export["holds"][0]["status"] == "active"
    assert export["tier"]["current"] == "SILVER" and export["tier"]["history"][0]["to"] == "SILVER"
    related = export["related"]
    assert related["partners.PartnerIdentity"][0]["customer_reference"] == "LOYAL-0042"
    assert related["charity.Donation"][0]["points"] == 200


def test_erasure_anonymises_the_person_and_keeps_the_books(known_member, staff_user):
    transactions_before = set(LedgerTransaction.objects.values_list("id", flat=True))
    token, _ = member_token_issue(known_member)
    email = known_member.email

    services.member_erase(member=known_member, staff_user=staff_user)

    member = Member.objects.get(pk=known_member.pk)
    assert member.email == f"erased-{member.pk}@invalid"
    assert member.display_name == "Erased member"
    assert (member.birth_date, member.password, member.referral_code) == (None, "", None)
    assert member.status == Member.Status.CLOSED
    assert member_token_verify(token) is None
    assert not PartnerIdentity.objects.filter(member=member).exists()
    # The books: nothing rewritten, the 450 spendable + 50 held forfeited into breakage.
    assert transactions_before < set(LedgerTransaction.objects.values_list("id", flat=True))
    forfeit = LedgerTransaction.objects.get(member=member, kind="expire")
    assert forfeit.member_points == -500 and forfeit.metadata["reason"] == "erasure"
    wallet = Account.objects.get(member=member)
    assert (wallet.balance, wallet.held) == (0, 0)
    assert not RedemptionHold.objects.filter(member=member, status="active").exists()
    assert TierChange.objects.filter(member=member).exists()  # history stays, pseudonymous
    report = ledger_check()
    assert report.ok, report.problems
    # The trail says who erased whom, never what was erased.
    event = AuditEvent.objects.get(action="member.erase")
    assert event.actor == staff_user and event.after["forfeitedPoints"] == 500
    assert email not in json.dumps([event.before, event.after])


def test_erasure_scrubs_the_enrolments_fingerprint_of_the_persons_details(programme, staff_user):
    from coalition.errors import IdempotencyConflict
    from coalition.models import IdempotencyRecord
    from partners.services import member_enroll

    partner, _ = factories.onboarded_partner()
    details = {"email": "ada@example.com", "display_name": "Ada L", "birth_date": None}
    enrolled = member_enroll(partner=partner, idempotency_key="enrol-ada", **details).member
    record = IdempotencyRecord.objects.get(operation="member_enroll", result_id=enrolled.pk)
    fingerprint = record.request_hash
    # Before: the same enrolment again replays (the fingerprint is of the person's details)
    assert member_enroll(partner=partner, idempotency_key="enrol-ada", **details).replayed

    services.member_erase(member=enrolled, staff_user=staff_user)

    record.refresh_from_db()
    assert record.request_hash != fingerprint
    # Whoever knows the details can no longer match them to the erased member
    with pytest.raises(IdempotencyConflict):
        member_enroll(partner=partner, idempotency_key="enrol-ada", **details)


def test_erasing_twice_changes_nothing_more(known_member, staff_user):
    services.member_erase(member=known_member, staff_user=staff_user)
    transactions = LedgerTransaction.objects.count()

    services.member_erase(member=known_member, staff_user=staff_user)

    assert LedgerTransaction.objects.count() == transactions
    assert AuditEvent.objects.filter(action="member.erase").count() == 1
    assert ledger_check().ok


def test_only_staff_may_erase(known_member, django_user_model):
    clerk = django_user_model.objects.create_user(username="clerk")
    with pytest.raises(services.CoalitionError):
        services.member_erase(member=known_member, staff_user=clerk)
    assert Member.objects.get(pk=known_member.pk).email == known_member.email


def test_the_admin_exports_and_erases_after_confirmation(operator, known_member):
    exported = operator.post(
        "/admin/coalition/member/",
        {"action": "export_personal_data", "_selected_action": [known_member.pk]},
    )
    assert exported["Content-Type"].startswith("application/json")
    assert "attachment" in exported["Content-Disposition"]
    body = json.loads(exported.content)
    assert body[known_member.member_number]["profile"]["email"] == known_member.email

    asked = operator.post(
        "/admin/coalition/member/",
        {"action": "erase_personal_data", "_selected_action": [known_member.pk]},
    )
    assert asked.status_code == 200 and b"cannot be undone" in asked.content
    assert Member.objects.get(pk=known_member.pk).status == "active"

    operator.post(
        "/admin/coalition/member/",
        {
            "action": "erase_personal_data",
            "_selected_action": [known_member.pk],
            "confirm_erase": "yes",
        },
    )
    assert Member.objects.get(pk=known_member.pk).display_name == "Erased member"
    assert AuditEvent.objects.filter(action="member.erase").exists()
    assert AuditEvent.objects.filter(action="member.export").exists()

"""Expiring-points notices (coalition/notifications.py): a mail some days before points
expire, once per member and expiry date, with what will really expire, through the outbox."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.core import mail

from coalition import outbox
from coalition.models import ExpiryNotice, PointLot, Programme
from coalition.notifications import expiry_notices_schedule
from coalition.services import add_months, member_erase
from coalition.services.posting import lot_expiry
from coalition.tasks import send_expiry_notices
from tests import factories

T0 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)  # when points are earned
EXPIRES = datetime(2031, 1, 15, 9, 0, tzinfo=UTC)  # their expiry under a 12-month life
NOTICE_RUN = EXPIRES - timedelta(days=20)  # inside the default 30 days


def run_notices(now=NOTICE_RUN) -> dict:
    """One daily run, then the outbox relay that sends its mails (run on commit in
    production; the test's transaction never commits)."""
    counts = expiry_notices_schedule(now=now)
    outbox.outbox_relay()
    return counts


def mails() -> list[tuple[str, str, str]]:
    return [(message.to[0], message.subject, message.body) for message in mail.outbox]


@pytest.fixture(autouse=True)
def _empty_outbox():
    mail.outbox.clear()


@pytest.mark.django_db
def test_a_member_is_told_once_how_many_points_expire_on_which_day(
    fixed_12_months, member, partner
):
    # Given two lots earned the same day (they expire together) and one earned later
    factories.earn(member, partner, 300, now=T0)
    factories.earn(member, partner, 200, now=T0 + timedelta(hours=1))
    factories.earn(member, partner, 1_000, now=T0 + timedelta(days=60))

    # When the job runs 40 days before the expiry
    assert run_notices(now=EXPIRES - timedelta(days=40)) == {"members": 0, "notices": 0}
    # then nothing is said yet.
    assert mails() == []

    # When it runs 20 days before (inside the 30 days),
    counts = run_notices()

    # then the member gets one mail for the 500 points expiring on 15 January 2031,
    assert counts == {"members": 1, "notices": 1}
    [(to, subject, body)] = mails()
    assert to == member.email
    assert subject == "500 points expire on 15 January 2031"
    assert "500 points in your wallet expire on 15 January 2031" in body
    assert "spend or donate them" in body
    notice = ExpiryNotice.objects.get()
    assert (notice.member_id, notice.expires_on, notice.points) == (
        member.pk,
        date(2031, 1, 15),
        500,
    )
    assert notice.sent_at is not None

    # and when the job runs again, the next day and the day after, nothing more is sent.
    run_notices(now=NOTICE_RUN + timedelta(days=1))
    run_notices(now=NOTICE_RUN + timedelta(days=2))
    assert len(mail.outbox) == 1
    assert ExpiryNotice.objects.count() == 1


@pytest.mark.django_db
def test_lots_expiring_on_different_days_get_one_mail_per_day_once_reached(
    fixed_12_months, member, partner
):
    # Given lots expiring on 15 January and 25 January 2031
    factories.earn(member, partner, 100, now=T0)
    factories.earn(member, partner, 50, now=T0 + timedelta(days=10))

    # When the job runs on 20 December 2030: only the first is within 30 days
    run_notices(now=datetime(2030, 12, 20, 3, 0, tzinfo=UTC))
    # When it runs on 30 December: both are, the first one already told
    run_notices(now=datetime(2030, 12, 30, 3, 0, tzinfo=UTC))

    # Then one mail for each day, each with its own points
    assert [subject for _, subject, _ in mails()] == [
        "100 points expire on 15 January 2031",
        "50 points expire on 25 January 2031",
    ]


@pytest.mark.django_db
def test_spent_held_and_donated_points_are_not_announced_and_the_wallet_caps_the_number(
    fixed_12_months, partner, charity
):
    # Given members whose 500 expiring points were spent in full, held in part, donated in
    # part, or who have less to spend than their lots' remaining
    spent, held, donor, short = (factories.member() for _ in range(4))
    for each in (spent, held, donor, short):
        factories.earn(each, partner, 500, now=T0)
    factories.burn(spent, partner, 500, now=T0 + timedelta(days=1))
    factories.hold(held, partner, 200, now=NOTICE_RUN - timedelta(minutes=1))
    factories.donate(donor, charity, 150, now=T0 + timedelta(days=1))
    factories.burn(short, partner, 100, now=T0 + timedelta(days=1))
    # (the lot says 500 are left, the wallet can spend 400: the sweep takes 400)
    PointLot.objects.filter(member=short).update(remaining=500)

    # When the job runs
    run_notices()

    # Then the fully spent member hears nothing; the others hear what the sweep would take
    assert sorted((to, subject.split()[0]) for to, subject, _ in mails()) == sorted(
        [(held.email, "300"), (donor.email, "350"), (short.email, "400")]
    )
    assert not ExpiryNotice.objects.filter(member=spent).exists()


@pytest.mark.django_db
def test_the_number_is_what_the_expiry_sweep_really_takes(fixed_12_months, member, partner):
    # Given 500 points expiring, 300 of them reserved by a hold for a while
    from coalition import services

    factories.earn(member, partner, 500, now=T0)
    factories.hold(member, partner, 300, now=EXPIRES - timedelta(minutes=5))

    # When the job runs (the hold is active then) and the sweep runs at the expiry
    run_notices(now=EXPIRES - timedelta(minutes=1))
    expired = services.points_expire_due(now=EXPIRES)

    # Then the mail said what expired: 200
    assert expired == 200
    assert mails()[0][1] == "200 points expire on 15 January 2031"


@pytest.mark.django_db
def test_closed_erased_and_mail_less_members_and_past_expiries_get_nothing(
    fixed_12_months, partner, django_user_model
):
    # Given members with due points: one closed, one erased, one with an erased member's
    # address though active, one without an email, one whose points expired already (the
    # sweep has not run)
    closed, erased, invalid, no_email, late = (factories.member() for _ in range(5))
    for each in (closed, erased, invalid, no_email, late):
        factories.earn(each, partner, 100, now=T0)
    PointLot.objects.filter(member=late).update(expires_at=NOTICE_RUN - timedelta(days=1))
    closed.status = closed.Status.CLOSED
    closed.save(update_fields=["status"])
    no_email.email = ""
    no_email.save(update_fields=["email"])
    invalid.email = f"erased-{invalid.pk}@invalid"
    invalid.save(update_fields=["email"])
    staff = django_user_model.objects.create_user("dpo", is_staff=True)
    member_erase(member=erased, staff_user=staff)

    # When the job runs
    counts = run_notices()

    # Then no mail goes and no notice is recorded
    assert mails() == []
    assert counts["notices"] == 0
    assert not ExpiryNotice.objects.exists()


@pytest.mark.django_db
def test_a_member_closed_after_the_notice_was_recorded_gets_no_mail(
    fixed_12_months, member, partner
):
    # Given a notice recorded but not sent yet (the relay has not run)
    factories.earn(member, partner, 100, now=T0)
    expiry_notices_schedule(now=NOTICE_RUN)
    member.status = member.Status.CLOSED
    member.save(update_fields=["status"])

    # When the outbox is relayed
    outbox.outbox_relay()

    # Then no mail goes
    assert mails() == []
    assert ExpiryNotice.objects.get().sent_at is None


@pytest.mark.django_db
def test_a_mail_that_fails_is_sent_by_the_next_run_with_the_points_then_due(
    fixed_12_months, member, partner, monkeypatch
):
    # Given the mail server down during the daily run
    factories.earn(member, partner, 400, now=T0)

    def refused(*args, **kwargs):
        raise ConnectionRefusedError("mail server down")

    monkeypatch.setattr("django.core.mail.send_mail", refused)
    run_notices()
    assert mails() == []
    assert ExpiryNotice.objects.get().sent_at is None

    # When the server is back, the member spent some points, and the next run comes
    monkeypatch.undo()
    factories.burn(member, partner, 100, now=NOTICE_RUN + timedelta(hours=1))
    run_notices(now=NOTICE_RUN + timedelta(days=1))
    # and the failed task is delivered once more (the relay's retry, or Celery's)
    assert send_expiry_notices.apply(args=[[ExpiryNotice.objects.get().pk]]).result == 0

    # Then one mail went, with what is due now
    assert [subject for _, subject, _ in mails()] == ["300 points expire on 15 January 2031"]
    notice = ExpiryNotice.objects.get()
    assert notice.points == 300 and notice.sent_at is not None


@pytest.mark.django_db
def test_the_lead_time_comes_from_the_setting(fixed_12_months, member, partner, settings):
    # Given a lead time of 7 days
    settings.COALITION = {**settings.COALITION, "EXPIRY_NOTICE_DAYS": 7}
    factories.earn(member, partner, 100, now=T0)

    # When the job runs 20 days before, then 5 days before
    run_notices(now=EXPIRES - timedelta(days=20))
    assert mails() == []
    run_notices(now=EXPIRES - timedelta(days=5))

    # Then the mail goes only the second time
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_many_members_in_small_chunks_each_get_one_mail(fixed_12_months, partner):
    # Given 7 members with due points, walked 3 at a time
    members = [factories.member() for _ in range(7)]
    for each in members:
        factories.earn(each, partner, 10, now=T0)

    # When the job runs
    counts = expiry_notices_schedule(now=NOTICE_RUN, batch_size=3)
    outbox.outbox_relay()

    # Then each member got one mail
    assert counts == {"members": 7, "notices": 7}
    assert sorted(to for to, _, _ in mails()) == sorted(each.email for each in members)


@pytest.mark.django_db
def test_inactivity_expiry_is_announced_for_the_day_inactivity_ends(programme, member, partner):
    # Given a 6-month inactivity rule and a member last active at T0
    programme.expiry_policy = Programme.ExpiryPolicy.INACTIVITY
    programme.expiry_months = 6
    programme.save()
    factories.earn(member, partner, 250, now=T0)
    assert lot_expiry(programme, T0) is None
    ends = add_months(T0, 6)

    # When the job runs 10 days before the 6 months end
    run_notices(now=ends - timedelta(days=10))

    # Then the member is told all 250 points expire that day
    assert mails()[0][1] == "250 points expire on 15 July 2030"


@pytest.mark.django_db
def test_the_daily_task_without_arguments_schedules_and_sends(fixed_12_months, member, partner):
    # Given points expiring within 30 days of now
    factories.earn(member, partner, 100)
    PointLot.objects.filter(member=member).update(
        expires_at=datetime.now(tz=UTC) + timedelta(days=10)
    )

    # When beat starts the task and the relay runs
    assert send_expiry_notices.apply().result == {"members": 1, "notices": 1}
    outbox.outbox_relay()

    # Then the mail went
    assert len(mail.outbox) == 1


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_send_each_notice_once(fixed_12_months, partner):
    # Given 20 members with points expiring on two days each
    members = [factories.member() for _ in range(20)]
    for each in members:
        factories.earn(each, partner, 100, now=T0)
        factories.earn(each, partner, 40, now=T0 + timedelta(days=5))
    mail.outbox.clear()

    # When two daily runs start together (two beats), in small chunks, each relaying the
    # outbox as its commits nudge it
    outcomes = factories.run_concurrently(
        2, lambda _: expiry_notices_schedule(now=NOTICE_RUN, batch_size=4)
    )
    assert [state for state, _ in outcomes] == ["ok", "ok"]
    outbox.outbox_relay()  # whatever a relay busy with the other run left

    # Then every member got one mail per expiry day
    assert ExpiryNotice.objects.filter(sent_at__isnull=False).count() == 40
    assert sorted((to, subject) for to, subject, _ in mails()) == sorted(
        [(each.email, "100 points expire on 15 January 2031") for each in members]
        + [(each.email, "40 points expire on 20 January 2031") for each in members]
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_notice_delivered_twice_at_once_is_mailed_once(fixed_12_months, member, partner):
    # Given a recorded notice not sent yet
    factories.earn(member, partner, 100, now=T0)
    notice = ExpiryNotice.objects.create(member=member, expires_on=date(2031, 1, 15), points=100)
    mail.outbox.clear()

    # When the mail task is delivered to two workers at once (a redelivery)
    outcomes = factories.run_concurrently(
        4, lambda _: send_expiry_notices.apply(args=[[notice.pk]]).result
    )

    # Then one of them sent the mail
    assert sorted(result for _, result in outcomes) == [0, 0, 0, 1]
    assert len(mail.outbox) == 1

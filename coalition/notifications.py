"""Expiring-points notices: a mail some days before points expire, once per member and
expiry date.

Two steps, as the other notifications (tier change, donation receipt) do:

1. `expiry_notices_schedule` (daily, beat) walks the members with open lots expiring within
   `COALITION["EXPIRY_NOTICE_DAYS"]` (default 30) in member-id order (keyset), a chunk at a
   time. Per chunk: skip closed, erased and mail-less members; ask `expiry_due` — the rule
   the expiry sweep applies, at the end of the window — what will really expire (held,
   spent, donated or expired points do not count, nor more than the wallet can spend);
   group it by expiry date; record one `ExpiryNotice` per member and date (an upsert on
   the unique key, that returns the rows still unsent) and, in the same transaction, put
   the mailing of those rows in the outbox.
2. `expiry_notices_mail(notice_ids=…)` (from the outbox) locks each notice, sends its mail
   and sets `sent_at` in the same transaction: a second delivery, or a second run that
   scheduled the same row, finds it sent. A mail that fails leaves its row unsent; the
   task's retries and the next daily run send it (with the points then due).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, datetime, timedelta

from django.conf import settings
from django.core import mail
from django.db import connection, transaction
from django.db.models import Q
from django.utils import dateformat, timezone

from .models import Account, ExpiryNotice, Member, PointLot, Programme
from .outbox import celery_task_enqueue
from .services.expiry import expiry_due
from .services.posting import add_months, programme_get

logger = logging.getLogger(__name__)

MAIL_TASK = "coalition.tasks.send_expiry_notices"
DEFAULT_NOTICE_DAYS = 30
DEFAULT_CHUNK = 500


def expiry_notice_days() -> int:
    """How many days before points expire the member is told (the setting, or 30)."""
    return int(getattr(settings, "COALITION", {}).get("EXPIRY_NOTICE_DAYS", DEFAULT_NOTICE_DAYS))


def expiry_notices_schedule(
    *, now: datetime | None = None, batch_size: int = DEFAULT_CHUNK
) -> dict[str, int]:
    """Record a notice for every member and date on which points expire within the notice
    period, and schedule the mail of each one not sent yet (through the outbox, a chunk of
    notices per task). Idempotent: a notice already sent is never scheduled again, and two
    runs at once record each notice once. Returns {"members": members looked at,
    "notices": notices scheduled}."""
    now = now or timezone.now()
    programme = programme_get()
    if programme.expiry_policy == Programme.ExpiryPolicy.NONE:
        return {"members": 0, "notices": 0}
    horizon = now + timedelta(days=expiry_notice_days())
    looked_at = scheduled = 0
    after = 0
    while True:
        member_ids = _members_with_points_expiring(programme, now, horizon, after, batch_size)
        if not member_ids:
            return {"members": looked_at, "notices": scheduled}
        looked_at += len(member_ids)
        after = member_ids[-1]
        notices = _notices_due(_reachable(member_ids), programme, now, horizon)
        if notices:
            scheduled += _notices_record(notices, now)


def _members_with_points_expiring(
    programme: Programme, now: datetime, horizon: datetime, after: int, limit: int
) -> list[int]:
    """The next `limit` members (by id, after `after`) with points that may expire in
    (now, horizon]: fixed lifetime, an open lot expiring then (the `lot_member_open` index,
    in member order); inactivity, a wallet with points whose months without activity end
    then."""
    if programme.expiry_policy == Programme.ExpiryPolicy.FIXED:
        candidates = PointLot.objects.filter(
            remaining__gt=0, expires_at__gt=now, expires_at__lte=horizon, member_id__gt=after
        )
    else:
        candidates = Account.objects.filter(
            kind=Account.Kind.MEMBER_WALLET,
            balance__gt=0,
            last_activity_at__gt=add_months(now, -programme.expiry_months),
            last_activity_at__lte=add_months(horizon, -programme.expiry_months),
            member_id__gt=after,
        )
    return list(
        candidates.order_by("member_id").values_list("member_id", flat=True).distinct()[:limit]
    )


def _unreachable() -> Q:
    """Members who get no mail: closed (erasure closes too), or without a usable address
    (an erased member's is `erased-<id>@invalid`)."""
    return Q(status=Member.Status.CLOSED) | Q(email="") | Q(email__endswith="@invalid")


def _reachable(member_ids: list[int]) -> list[int]:
    """Those of these members a mail can reach."""
    return list(
        Member.objects.filter(pk__in=member_ids)
        .exclude(_unreachable())
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _notices_due(
    member_ids: list[int], programme: Programme, now: datetime, horizon: datetime
) -> dict[tuple[int, date], int]:
    """{(member id, expiry date): points} that will expire after `now` and by `horizon`.

    `expiry_due` at the horizon is what the sweep would take by then, lot by lot, earliest
    first, never more than the wallet can spend: a lot's share is what that lot will lose
    (lots already past their expiry, which the next sweep takes, come first and are not
    announced)."""
    if not member_ids:
        return {}
    due = expiry_due(member_ids=member_ids, programme=programme, now=horizon)
    notices: dict[tuple[int, date], int] = defaultdict(int)
    if programme.expiry_policy == Programme.ExpiryPolicy.FIXED:
        lot_expiry = dict(
            PointLot.objects.filter(
                pk__in=[lot_id for each in due.values() for lot_id, _ in each.lots]
            ).values_list("pk", "expires_at")
        )
        for each in due.values():
            for lot_id, taken in each.lots:
                expires_at = lot_expiry[lot_id]
                if expires_at > now and taken > 0:
                    notices[(each.member_id, timezone.localdate(expires_at))] += taken
    else:
        last_activity = dict(
            Account.objects.filter(
                kind=Account.Kind.MEMBER_WALLET, member_id__in=list(due)
            ).values_list("member_id", "last_activity_at")
        )
        for each in due.values():
            expires_at = add_months(last_activity[each.member_id], programme.expiry_months)
            if expires_at > now and each.points > 0:
                notices[(each.member_id, timezone.localdate(expires_at))] += each.points
    return dict(notices)


def _notices_record(notices: dict[tuple[int, date], int], now: datetime) -> int:
    """Record these notices, and schedule the mail of those not sent yet, in one database
    transaction. Returns how many were scheduled.

    One upsert on the unique key (member, expiry date): a new notice is inserted; an unsent
    one gets the points due now; a sent one is left alone and not returned. Two runs at once
    insert the same keys in the same order: the second waits for the first's commit, then
    finds the rows (and schedules the unsent ones again, which their row lock makes
    harmless)."""
    keys = sorted(notices)
    adapt_date = connection.ops.adapt_datefield_value
    created_at = connection.ops.adapt_datetimefield_value(now)
    table = ExpiryNotice._meta.db_table
    # Only fixed SQL text is formatted in; every value travels as a parameter.
    sql = (
        f"INSERT INTO {table} (member_id, expires_on, points, created_at) "  # noqa: S608
        f"VALUES {', '.join(['(%s, %s, %s, %s)'] * len(keys))} "
        "ON CONFLICT (member_id, expires_on) DO UPDATE SET points = EXCLUDED.points "
        f"WHERE {table}.sent_at IS NULL RETURNING id"
    )
    params = [
        value
        for member_id, expires_on in keys
        for value in (
            member_id,
            adapt_date(expires_on),
            notices[(member_id, expires_on)],
            created_at,
        )
    ]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            notice_ids = sorted(row[0] for row in cursor.fetchall())
        if notice_ids:
            celery_task_enqueue(MAIL_TASK, notice_ids)
    return len(notice_ids)


def expiry_notices_mail(*, notice_ids: list[int], now: datetime | None = None) -> int:
    """Send the mail of each of these notices not sent yet, once (missing ids are ignored).
    Returns how many were sent now.

    Each notice is locked while its mail is sent and marked sent in the same transaction,
    so a second delivery of the task, or a task of a second run, sends nothing. No mail
    goes to a member closed or erased since the notice was recorded, nor for a date
    already past (the row stays unsent). A mail that fails raises, after the notices
    before it were marked sent: the rest wait for the retry or the next run."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    sent = 0
    with mail.get_connection() as mail_connection:  # one SMTP session for the chunk
        for notice_id in sorted(notice_ids):
            with transaction.atomic():
                notice = (
                    ExpiryNotice.objects.select_for_update(of=("self",))
                    .select_related("member")
                    .filter(pk=notice_id, sent_at__isnull=True)
                    .first()
                )
                if notice is None or notice.expires_on < today:
                    continue
                member = notice.member
                email = member.email
                if member.status == Member.Status.CLOSED or not email or email.endswith("@invalid"):
                    continue
                _notice_send(notice, member, mail_connection)
                ExpiryNotice.objects.filter(pk=notice.pk).update(sent_at=timezone.now())
                sent += 1
    return sent


def _notice_send(notice: ExpiryNotice, member: Member, mail_connection) -> None:
    """The mail itself."""
    on = dateformat.format(notice.expires_on, "j F Y")
    mail.send_mail(
        subject=f"{notice.points} points expire on {on}",
        message=(
            f"Hello {member.display_name},\n\n"
            f"{notice.points} points in your wallet expire on {on}; "
            "spend or donate them before then."
        ),
        from_email=None,
        recipient_list=[member.email],
        connection=mail_connection,
    )

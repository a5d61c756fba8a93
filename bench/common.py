"""What the benchmarks share: members with wallets created in bulk."""

import secrets

from django.conf import settings
from django.db import transaction
from django.utils import timezone


def members_bulk_create(count: int, *, label: str, digit: str = "8") -> list:
    """`count` members with their wallets, inserted in bulk (benchmarks only: no welcome
    bonus, no password). `digit` keeps member numbers of different benches apart."""
    from coalition.models import Account, Member
    from coalition.services import luhn_check_digit

    prefix = settings.COALITION["MEMBER_NUMBER_PREFIX"]
    run = secrets.token_hex(4)
    now = timezone.now()
    with transaction.atomic():
        first = (Member.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1
        rows = []
        for n in range(first, first + count):
            body = f"{prefix}{digit}{n:010d}"[-15:]
            rows.append(
                Member(
                    member_number=body + luhn_check_digit(body),
                    email=f"bench-{label}-{run}-{n}@bench.invalid",
                    display_name=f"Bench member {n}",
                    created_at=now,
                )
            )
        created = Member.objects.bulk_create(rows, batch_size=5000)
        Account.objects.bulk_create(
            [
                Account(kind=Account.Kind.MEMBER_WALLET, member=m, last_activity_at=now)
                for m in created
            ],
            batch_size=5000,
        )
    return created

"""manage.py generate_volume --members N --transactions M [--partners 20] [--charities 5]
[--months 6] [--seed S] [--force]

Builds a large, realistic ledger fast, for benchmarks only: N members with their wallets and
M ledger transactions spread over the last `--months` months, loaded with PostgreSQL COPY.

The mix: about 4 % of the transactions are expiries (members whose oldest points, earned
before the window, expire inside it; each such member gets that opening earn, another 4 %),
the rest earns (75 %), burns (17 %) and donations (8 %, with their Donation rows and receipt
numbers) at random partners and charities. Spending takes the earliest-expiring lots first and
never more than the member has: the whole history is simulated in Python, in time order, and
the wallets' balances and the lots' remaining points are loaded as the simulation left them,
so that `manage.py check_ledger` passes afterwards.

It streams: the window is cut into slices of at most CHUNK (50,000) events, each simulated
and then COPYed at once (transactions, entries, donations, and the lots the slice used up);
only the members' wallets and their still-open lots stay in memory, and those lots are
written at the end. Memory grows with members and open lots, not with transactions.

As superuser the load runs with `session_replication_role = replica` (the ledger triggers and
foreign-key checks are off for this one transaction; the simulation keeps everything
consistent); otherwise the triggers run on every row (much slower) and keep the balances.

It refuses SQLite, and any database whose name does not contain "bench" unless --force.
Every run adds a new set of partners, charities and members (nothing is deleted).
"""

from __future__ import annotations

import io
import json
import random
import secrets
import time
from collections import deque
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from coalition.models import Account, Entry, LedgerTransaction, Member, PointLot, Programme
from coalition.money import points_value
from coalition.services import (
    add_months,
    lot_expiry,
    luhn_check_digit,
    programme_get,
    system_account_id,
)

SLICES_PER_MONTH = 4
CHUNK = 50_000  # events (or members) simulated and COPYed at a time
MIN_SPEND = 100
EXPIRY_SHARE = 0.04
MIX = (("earn", 0.75), ("burn", 0.17), ("donate", 0.08))


def _text(value) -> str:
    """One value in COPY's text format."""
    if value is None:
        return r"\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        value = json.dumps(value, separators=(",", ":"))
    value = str(value)
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return value


def _lots(taken: list[list[int]]) -> str:
    """[[lot id, points], ...] as JSON text."""
    return "[" + ",".join(f"[{lot_id},{points}]" for lot_id, points in taken) + "]"


class _Table:
    """A model's COPY statement: the columns we give, then every other column that has no
    database default, filled with the field's default (so new fields don't break the load)."""

    def __init__(self, model, given: list[str]):
        fields = {field.attname: field for field in model._meta.concrete_fields}
        rest = [
            field
            for name, field in fields.items()
            if name not in given and not field.primary_key and not field.has_db_default()
        ]
        self.columns = [fields[name].column for name in given] + [field.column for field in rest]
        self.tail = "".join("\t" + _text(field.get_default()) for field in rest)
        self.sql = (
            f'COPY "{model._meta.db_table}" ('
            + ", ".join(f'"{column}"' for column in self.columns)
            + ") FROM STDIN"
        )
        self.buffer = io.StringIO()
        self.rows = 0

    def add(self, *values) -> None:
        self.buffer.write("\t".join(values))
        self.buffer.write(self.tail)
        self.buffer.write("\n")
        self.rows += 1

    def flush(self, cursor) -> int:
        if not self.buffer.tell():
            return 0
        self.buffer.seek(0)
        cursor.copy_expert(self.sql, self.buffer)
        written = self.rows
        self.buffer = io.StringIO()
        self.rows = 0
        return written


def _ids(cursor, model, count: int) -> list[int]:
    """`count` fresh primary keys from the table's own sequence (safe with other writers)."""
    if count == 0:
        return []
    cursor.execute(
        "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
        [model._meta.db_table, count],
    )
    return [row[0] for row in cursor.fetchall()]


class _Wallet:
    __slots__ = ("account_id", "balance", "lots", "last_activity", "opening")

    def __init__(self, account_id: int, created_at: datetime):
        self.account_id = account_id
        self.balance = 0
        self.lots: deque = deque()  # [lot index, remaining], earliest-expiring first
        self.last_activity = created_at
        self.opening = None  # the lot of the opening earn that expires in the window


class Command(BaseCommand):
    help = "Load a large realistic ledger with COPY, for benchmarks (PostgreSQL only)."

    def add_arguments(self, parser):
        parser.add_argument("--members", type=int, required=True)
        parser.add_argument("--transactions", type=int, required=True)
        parser.add_argument("--partners", type=int, default=20)
        parser.add_argument("--charities", type=int, default=5)
        parser.add_argument("--months", type=int, default=6)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--force", action="store_true", help="Run on a database not named like *bench*."
        )

    def handle(self, *args, **options):
        name = str(connection.settings_dict.get("NAME") or "")
        if connection.vendor != "postgresql":
            raise CommandError(
                f"generate_volume loads with PostgreSQL COPY and refuses {connection.vendor}: "
                "run it on a PostgreSQL database of its own, named like *bench*"
            )
        if "bench" not in name and not options["force"]:
            raise CommandError(
                f"generate_volume writes a lot of rows; it runs on a database named like *bench* "
                f"(this one is {name!r}), or with --force"
            )
        members, count = options["members"], options["transactions"]
        if members < 1 or count < 0 or options["partners"] < 1 or options["charities"] < 1:
            raise CommandError("--members, --partners and --charities must be at least 1")
        if not 1 <= options["months"] <= 120:
            raise CommandError("--months must be from 1 to 120")
        rng = random.Random(options["seed"])
        started = time.monotonic()
        with transaction.atomic():
            rows, transactions = self._load(rng, options)
        elapsed = time.monotonic() - started
        self.stdout.write(
            f"generated {members} members and {transactions} transactions "
            f"({rows} rows) in {elapsed:.1f} s: {rows / elapsed:,.0f} rows/s, "
            f"{transactions / elapsed:,.0f} transactions/s"
        )

    # ----------------------------------------------------------------------- the load

    def _load(self, rng: random.Random, options: dict) -> tuple[int, int]:
        from charity.models import Charity, Donation, ReceiptSequence
        from charity.services import charity_create
        from charity.services.donations import RECEIPT_PREFIX
        from partners.services import partner_create

        programme = programme_get()
        now = timezone.now()
        window_start = add_months(now, -options["months"])
        run = self._run_tag()
        partners = [
            partner_create(
                code=f"VOL{run}-{index:03d}",
                name=f"Volume partner {run}-{index}",
                currency=programme.currency,
                earn_rate="1",
                issuance_price="0.0100",
                redemption_price="0.0080",
            )[0]
            for index in range(options["partners"])
        ]
        charities = [
            charity_create(
                name=f"Volume charity {run}-{index}",
                registration_number=f"VOL-{run}-{index}",
                cause="environment",
                status=Charity.Status.VERIFIED,
            )
            for index in range(options["charities"])
        ]
        issued = [system_account_id(Account.Kind.PARTNER_ISSUED, partner_id=p.pk) for p in partners]
        redeemed = [
            system_account_id(Account.Kind.PARTNER_REDEEMED, partner_id=p.pk) for p in partners
        ]
        received = [
            system_account_id(Account.Kind.CHARITY_RECEIVED, charity_id=c.pk) for c in charities
        ]
        breakage = system_account_id(Account.Kind.BREAKAGE)

        cursor = connection.cursor()
        fast = self._triggers_off(cursor)
        written = 0

        # Members (and, when the triggers run, their wallets first: they keep the balances).
        n_members = options["members"]
        member_ids = _ids(cursor, Member, n_members)
        account_ids = _ids(cursor, Account, n_members)
        prefix = settings.COALITION["MEMBER_NUMBER_PREFIX"]
        oldest = add_months(window_start, -programme.expiry_months - 1)
        member_table = _Table(
            Member, ["id", "member_number", "email", "display_name", "status", "created_at"]
        )
        wallets: list[_Wallet] = []
        for index, member_id in enumerate(member_ids):
            created_at = oldest + timedelta(seconds=rng.randrange(0, 30 * 86400))
            digits = f"{prefix}{run}{index:07d}"
            member_table.add(
                str(member_id),
                digits + luhn_check_digit(digits),
                f"vol{run}.{index}@bench.invalid",
                f"Volume member {run}-{index}",
                Member.Status.ACTIVE,
                created_at.isoformat(),
            )
            wallets.append(_Wallet(account_ids[index], created_at))
            if member_table.rows >= CHUNK:
                written += member_table.flush(cursor)
        written += member_table.flush(cursor)
        wallet_columns = ["id", "kind", "member_id", "balance", "held", "last_activity_at"]
        if not fast:
            table = _Table(Account, wallet_columns)
            for member_id, wallet in zip(member_ids, wallets, strict=True):
                table.add(str(wallet.account_id), "member_wallet", str(member_id), "0", "0", r"\N")
                if table.rows >= CHUNK:
                    written += table.flush(cursor)
            written += table.flush(cursor)

        # The timeline: opening earns before the window for the members whose points will
        # expire in it, then slices of the window in time order.
        count = options["transactions"]
        n_expire = min(int(count * EXPIRY_SHARE), n_members, count // 2)
        expiring = rng.sample(range(n_members), n_expire)
        window = (now - window_start).total_seconds()
        openings = []
        expiries = []
        for member in expiring:
            target = window_start + timedelta(seconds=rng.uniform(0, window))
            earned_at = add_months(target, -programme.expiry_months)
            earned_at = max(earned_at, wallets[member].last_activity + timedelta(minutes=1))
            expires_at = lot_expiry(programme, earned_at) or target
            if not window_start <= expires_at < now:
                continue  # it would not expire in the window: a regular event instead
            openings.append((earned_at, "open", member))
            expiries.append((expires_at, "expire", member))
        regular = count - len(openings) - len(expiries)
        slices = max(1, options["months"] * SLICES_PER_MONTH, -(-regular // CHUNK))
        per_slice = [regular // slices + (1 if i < regular % slices else 0) for i in range(slices)]
        expiries = deque(sorted(expiries))
        # Lots are [id, member index, txn id, points, remaining, expires_at, at]: each one is
        # written when it is used up (lot_table, flushed with its slice) or, still open, at
        # the end from its wallet.
        lot_table = _Table(
            PointLot,
            ["id", "member_id", "transaction_id", "points", "remaining", "expires_at",
             "created_at"],
        )  # fmt: skip
        donations: list[tuple] = []
        state = {
            "rng": rng,
            "programme": programme,
            "wallets": wallets,
            "member_ids": member_ids,
            "partners": partners,
            "charities": charities,
            "issued": issued,
            "redeemed": redeemed,
            "received": received,
            "breakage": breakage,
            "lot_table": lot_table,
            "donations": donations,
            "donation_models": (Donation, ReceiptSequence, RECEIPT_PREFIX),
            "run": run,
            "serial": 0,
        }
        transactions = 0
        openings.sort()
        for start in range(0, len(openings), CHUNK):
            written_now, made = self._post_events(cursor, state, openings[start : start + CHUNK])
            written += written_now
            transactions += made
        del openings
        slice_length = window / slices
        for index in range(slices):
            begin = window_start + timedelta(seconds=slice_length * index)
            end = begin + timedelta(seconds=slice_length)
            events = [
                (begin + timedelta(seconds=rng.uniform(0, slice_length)), self._pick(rng), None)
                for _ in range(per_slice[index])
            ]
            while expiries and (expiries[0][0] < end or index == slices - 1):
                events.append(expiries.popleft())
            events.sort(key=lambda event: event[0])
            written_now, made = self._post_events(cursor, state, events)
            written += written_now
            transactions += made

        # What the simulation left: the open lots, and the wallets (or their activity).
        for wallet in wallets:
            for lot in wallet.lots:
                if lot[4] > 0:
                    self._lot_row(state, lot)
            if lot_table.rows >= CHUNK:
                written += lot_table.flush(cursor)
        written += lot_table.flush(cursor)
        if fast:
            table = _Table(Account, wallet_columns)
            for member_id, wallet in zip(member_ids, wallets, strict=True):
                table.add(
                    str(wallet.account_id), "member_wallet", str(member_id), str(wallet.balance),
                    "0", wallet.last_activity.isoformat(),
                )  # fmt: skip
                if table.rows >= CHUNK:
                    written += table.flush(cursor)
            written += table.flush(cursor)
        else:
            cursor.execute(
                "CREATE TEMPORARY TABLE volume_activity (id bigint, at timestamptz) ON COMMIT DROP"
            )
            for start in range(0, len(wallets), CHUNK):
                buffer = io.StringIO(
                    "".join(
                        f"{w.account_id}\t{w.last_activity.isoformat()}\n"
                        for w in wallets[start : start + CHUNK]
                    )
                )
                cursor.copy_expert("COPY volume_activity FROM STDIN", buffer)
            cursor.execute(
                "UPDATE coalition_account a SET last_activity_at = v.at "
                "FROM volume_activity v WHERE a.id = v.id"
            )
        if fast:
            cursor.execute("SET LOCAL session_replication_role = origin")
        cursor.execute("ANALYZE coalition_transaction")
        cursor.execute("ANALYZE coalition_entry")
        cursor.execute("ANALYZE coalition_lot")
        cursor.execute("ANALYZE coalition_account")
        return written, transactions

    def _run_tag(self) -> str:
        """Four digits no earlier run used (member numbers and codes carry them)."""
        prefix = settings.COALITION["MEMBER_NUMBER_PREFIX"]
        for _ in range(100):
            tag = f"{secrets.randbelow(10_000):04d}"
            if not Member.objects.filter(member_number__startswith=prefix + tag).exists():
                return tag
        raise CommandError("no unused run tag left: drop the bench database and start afresh")

    def _triggers_off(self, cursor) -> bool:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        row = cursor.fetchone()
        if not row or not row[0]:
            self.stdout.write("not a superuser: the ledger triggers run on every row (slower)")
            return False
        cursor.execute("SET LOCAL session_replication_role = replica")
        return True

    @staticmethod
    def _pick(rng: random.Random) -> str:
        roll = rng.random()
        for kind, share in MIX:
            if roll < share:
                return kind
            roll -= share
        return MIX[0][0]

    # ----------------------------------------------------------------------- simulation

    def _post_events(self, cursor, state: dict, events: list) -> tuple[int, int]:
        """Simulate a slice of events in time order and COPY its transactions and entries."""
        rng: random.Random = state["rng"]
        wallets: list[_Wallet] = state["wallets"]
        member_ids = state["member_ids"]
        txn_ids = iter(_ids(cursor, LedgerTransaction, len(events)))
        earns = sum(1 for _, kind, _ in events if kind in ("earn", "open"))
        # Spends that turn into earns need lot ids too: reserve for every event.
        lot_ids = iter(_ids(cursor, PointLot, len(events) if earns else 0))
        txn_table = _Table(
            LedgerTransaction,
            ["id", "kind", "member_id", "partner_id", "charity_id", "member_points", "reference",
             "caller", "idempotency_key", "purchase_amount", "purchase_currency", "created_at",
             "metadata"],
        )  # fmt: skip
        entry_table = _Table(Entry, ["transaction_id", "account_id", "points"])
        programme: Programme = state["programme"]
        currency = programme.currency
        for at, kind, member in events:
            if member is None:
                member = rng.randrange(len(wallets))
            wallet = wallets[member]
            txn_id = next(txn_ids)
            state["serial"] += 1
            key = f"vol-{state['run']}-{state['serial']}"
            stamp = at.isoformat()
            if kind in ("burn", "donate") and wallet.balance < MIN_SPEND:
                kind = "earn"
            if kind == "expire":
                lot = wallet.opening
                if lot is None or lot[4] <= 0:
                    kind = "earn"
                else:
                    points = lot[4]
                    taken = self._consume(state, wallet, points, first=lot)
                    txn_table.add(
                        str(txn_id), "expire", str(member_ids[member]), r"\N", r"\N",
                        str(-points), "", "system:expiry", r"\N", r"\N", "", stamp,
                        f'{{"lots":{_lots(taken)},"policy":"{programme.expiry_policy}"}}',
                    )  # fmt: skip
                    entry_table.add(str(txn_id), str(wallet.account_id), str(-points))
                    entry_table.add(str(txn_id), str(state["breakage"]), str(points))
                    continue
            if kind in ("earn", "open"):
                partner = rng.randrange(len(state["partners"]))
                points = int(rng.lognormvariate(4.0, 1.0)) + 1
                points = min(points, 20_000)
                amount = Decimal(points) + Decimal(rng.randrange(100)) / 100
                partner_id = state["partners"][partner].pk
                # The metadata `purchase_record` writes, as JSON text (json.dumps is slow).
                metadata = (
                    f'{{"breakdown":[{{"kind":"base","label":"{amount} × 1",'
                    f'"points":{points},"fundedBy":"partner","promotionId":null,'
                    f'"multiplier":null}}],"eligibleAmount":"{amount}"}}'
                )
                txn_table.add(
                    str(txn_id), "earn", str(member_ids[member]), str(partner_id), r"\N",
                    str(points), f"receipt-{key}", f"partner:{partner_id}", key, str(amount),
                    currency, stamp, metadata,
                )  # fmt: skip
                entry_table.add(str(txn_id), str(state["issued"][partner]), str(-points))
                entry_table.add(str(txn_id), str(wallet.account_id), str(points))
                lot = [next(lot_ids), member, txn_id, points, points, lot_expiry(programme, at), at]
                wallet.lots.append(lot)
                wallet.balance += points
                wallet.last_activity = max(wallet.last_activity, at)
                if kind == "open":
                    wallet.opening = lot
                continue
            points = rng.randint(MIN_SPEND, max(MIN_SPEND, min(wallet.balance, 5_000)))
            taken = self._consume(state, wallet, points)
            wallet.last_activity = max(wallet.last_activity, at)
            if kind == "burn":
                partner = rng.randrange(len(state["partners"]))
                partner_id = state["partners"][partner].pk
                txn_table.add(
                    str(txn_id), "burn", str(member_ids[member]), str(partner_id), r"\N",
                    str(-points), f"till-{key}", f"partner:{partner_id}", key, r"\N", "",
                    stamp, f'{{"lots":{_lots(taken)}}}',
                )  # fmt: skip
                entry_table.add(str(txn_id), str(wallet.account_id), str(-points))
                entry_table.add(str(txn_id), str(state["redeemed"][partner]), str(points))
            else:
                charity = rng.randrange(len(state["charities"]))
                charity_id = state["charities"][charity].pk
                txn_table.add(
                    str(txn_id), "donate", str(member_ids[member]), r"\N", str(charity_id),
                    str(-points), "", f"member:{member_ids[member]}", key, r"\N", "", stamp,
                    f'{{"source":"member","lots":{_lots(taken)}}}',
                )  # fmt: skip
                entry_table.add(str(txn_id), str(wallet.account_id), str(-points))
                entry_table.add(str(txn_id), str(state["received"][charity]), str(points))
                state["donations"].append((member_ids[member], charity_id, txn_id, points, at))
        made = txn_table.rows
        written = txn_table.flush(cursor) + entry_table.flush(cursor)
        written += state["lot_table"].flush(cursor)
        written += self._donations(cursor, state, *state["donation_models"])
        return written, made

    @staticmethod
    def _lot_row(state: dict, lot: list) -> None:
        lot_id, member, txn_id, points, remaining, expires_at, created_at = lot
        state["lot_table"].add(
            str(lot_id), str(state["member_ids"][member]), str(txn_id), str(points),
            str(remaining), _text(expires_at), created_at.isoformat(),
        )  # fmt: skip

    @staticmethod
    def _consume(state: dict, wallet: _Wallet, points: int, first=None) -> list[list[int]]:
        """Take points from the wallet's lots, earliest-expiring first (as `_consume_lots`)."""
        taken: list[list[int]] = []
        left = points
        if first is not None:
            take = min(first[4], left)
            first[4] -= take
            taken.append([first[0], take])
            left -= take
            if first[4] == 0:
                Command._lot_row(state, first)  # used up: written now, never again
        while left:
            lot = wallet.lots[0]
            take = min(lot[4], left)
            if take:
                lot[4] -= take
                taken.append([lot[0], take])
                left -= take
                if lot[4] == 0:
                    Command._lot_row(state, lot)
            if lot[4] == 0:
                wallet.lots.popleft()
        while wallet.lots and wallet.lots[0][4] == 0:
            wallet.lots.popleft()
        wallet.balance -= points
        return taken

    def _donations(self, cursor, state: dict, donation_model, sequence_model, prefix) -> int:
        """Donation rows for the donate transactions, with receipt numbers of their year."""
        donations = state["donations"]
        if not donations:
            return 0
        programme: Programme = state["programme"]
        by_year: dict[int, int] = {}
        for *_, at in donations:
            by_year[at.year] = by_year.get(at.year, 0) + 1
        next_number: dict[int, int] = {}
        for year, how_many in sorted(by_year.items()):
            sequence, _ = sequence_model.objects.select_for_update().get_or_create(year=year)
            next_number[year] = sequence.last + 1
            sequence_model.objects.filter(pk=year).update(last=sequence.last + how_many)
        table = _Table(
            donation_model,
            ["member_id", "charity_id", "transaction_id", "source", "points", "value",
             "currency", "donation_price", "receipt_number", "created_at"],
        )  # fmt: skip
        for member_id, charity_id, txn_id, points, at in donations:
            number = next_number[at.year]
            next_number[at.year] += 1
            table.add(
                str(member_id), str(charity_id), str(txn_id), "member", str(points),
                str(points_value(points, programme.donation_price, programme.currency)),
                programme.currency, str(programme.donation_price),
                f"{prefix}-{at.year}-{number:06d}", at.isoformat(),
            )  # fmt: skip
        donations.clear()
        return table.flush(cursor)

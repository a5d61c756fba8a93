"""Computing a run, set-based: claim, aggregate, price, net, total.

1. Claim: one INSERT ... SELECT puts every unclaimed transaction created before the period
   end into `settlement_claim` (primary key = transaction, so never twice).
2. Aggregate: one GROUP BY over the claimed transactions' entries, joined to each partner's
   commercial terms through their validity range [valid_from, next valid_from). Its result
   is one row per (account kind, counterparty, reversal?, match?, terms, donation price):
   a handful of rows per partner, whatever the number of transactions.
3. Price and net (Python, exact `Decimal`, over those few rows): priced components, one line
   per counterparty, rounded once, the carried amounts joined in, the direction decided.
4. Total: pay-outs, collections, carry, operator revenue and the float (docs/settlement.md),
   and the identity  collected - paid out == revenue + float_end - float_start  asserted.

Reversals are priced at the terms of the transaction they reverse (a refund gives back what
was charged) and are netted in the run that claims them.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext
from fractions import Fraction

from django.conf import settings
from django.db import connection, models

from charity.models import Charity
from coalition.models import Account
from coalition.money import minor_exponent, round_for_stripe
from coalition.services import programme_get
from partners.models import CommercialTerms, Partner

from ..errors import CurrencyMismatch, InvalidState
from ..models import SettlementLine, SettlementLineComponent, SettlementRun
from .common import charity_minimum, partner_minimum

logger = logging.getLogger(__name__)
Component = SettlementLineComponent.Kind
AccountKind = Account.Kind
MONEY_CONTEXT = Context(prec=60)


# --------------------------------------------------------------------------- 1. claim

# EXCEPT, not NOT EXISTS: a set operation is hashed (or sorted) whatever the statistics say,
# whereas an anti-join planned as a nested loop over the claim table being filled is
# quadratic. No ON CONFLICT: only one run is open at a time, and should two ever claim at
# once, the primary key makes the second fail, not skip.
#
# Both sides start at the claim floor: every transaction with a smaller id was claimed by an
# earlier run (or never committed), so a nightly run reads the day's transactions and the
# day's claims, not the ledger's whole history (13.5 s for the last 1M of 10M without it).
_CLAIM_SQL = """
    INSERT INTO settlement_claim (transaction_id, run_id)
    SELECT unclaimed.id, %(run)s FROM (
        SELECT id FROM coalition_transaction
         WHERE id >= %(floor)s AND created_at < %(period_end)s
        EXCEPT
        SELECT transaction_id FROM settlement_claim WHERE transaction_id >= %(floor)s
    ) unclaimed
"""


def claim_transactions(*, run: SettlementRun) -> int:
    """Claim, in one statement, every transaction not yet settled created before the run's
    period end, and record the run's claim floor. Transactions still uncommitted when the
    claim reads the ledger are invisible to it: they go to the next run."""
    if connection.vendor not in ("postgresql", "sqlite"):
        raise InvalidState(f"Settlement does not support the {connection.vendor} database")
    floor = _previous_floor(run)
    allocated = _wait_for_allocated_ids() if connection.vendor == "postgresql" else None
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL, {"run": run.pk, "period_end": run.period_end, "floor": floor or 0}
        )
        claimed = cursor.rowcount
        run.claim_floor_id = _next_floor(floor or 0, allocated, run.period_end)
        return claimed


def _previous_floor(run: SettlementRun) -> int | None:
    """The highest claim floor of the runs whose claims stand (a discarded run gave its
    claims back, so its floor says nothing)."""
    return (
        SettlementRun.objects.exclude(pk=run.pk)
        .exclude(status=SettlementRun.Status.DISCARDED)
        .aggregate(floor=models.Max("claim_floor_id"))["floor"]
    )


def _wait_for_allocated_ids() -> int | None:
    """The highest transaction id allocated so far, once every database transaction that
    could hold a lower id uncommitted has ended — None if one outlasts the wait.

    How PostgreSQL's CREATE INDEX CONCURRENTLY waits for older transactions: note the
    virtual transaction ids open now (pg_locks shows every session's, whatever the role may
    read of pg_stat_activity), then wait until none of them remains. An id at or below the
    sequence's value read before that list was taken by one of them (or has committed or
    rolled back already); any transaction starting later gets a higher id.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT last_value FROM pg_sequences WHERE schemaname = current_schema() "
            "AND sequencename = %s",
            [_transaction_sequence(cursor)],
        )
        row = cursor.fetchone()
        allocated = row[0] if row and row[0] is not None else 0
        cursor.execute(
            "SELECT array_agg(l.virtualtransaction) FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'virtualxid' AND l.pid <> pg_backend_pid() "
            "AND a.datname = current_database()"  # only this database can use the sequence
        )
        open_ones = cursor.fetchone()[0] or []
        deadline = time.monotonic() + settings.SETTLEMENT_CLAIM_WAIT_SECONDS
        while open_ones:
            cursor.execute(
                "SELECT array_agg(virtualtransaction) FROM pg_locks "
                "WHERE locktype = 'virtualxid' AND virtualtransaction = ANY(%s)",
                [open_ones],
            )
            open_ones = cursor.fetchone()[0] or []
            if open_ones and time.monotonic() > deadline:
                logger.warning(
                    "settlement claim: %d database transaction(s) still open after %.0f s; "
                    "claiming without advancing the claim floor",
                    len(open_ones),
                    settings.SETTLEMENT_CLAIM_WAIT_SECONDS,
                )
                return None
            if open_ones:
                time.sleep(0.05)
    return allocated


def _transaction_sequence(cursor) -> str:
    cursor.execute("SELECT pg_get_serial_sequence('coalition_transaction', 'id')")
    qualified = cursor.fetchone()[0]  # "public.coalition_transaction_id_seq"
    return qualified.split(".", 1)[-1].strip('"')


def _next_floor(floor: int, allocated: int | None, period_end) -> int | None:
    """This run's claim floor: the lowest id at or above the previous floor that is still
    unclaimed after this claim — a transaction created at or after the period end (not due
    yet), or the first id above those allocated before the claim (None if the wait gave up:
    the previous floor then stands for the next run)."""
    if allocated is None:
        return floor or None
    with connection.cursor() as cursor:
        # In id order from the floor: what it passes over is this run's own claims.
        cursor.execute(
            "SELECT id FROM coalition_transaction "
            "WHERE id >= %s AND id <= %s AND created_at >= %s ORDER BY id LIMIT 1",
            [floor, allocated, period_end],
        )
        row = cursor.fetchone()
        not_due = row[0] if row else None
    return not_due if not_due is not None else allocated + 1


# --------------------------------------------------------------------------- 2. aggregate


def _donation_table() -> str | None:
    """The charity app's donation table (it knows each donation's price), if installed."""
    try:
        from charity.models import Donation
    except ImportError:  # pragma: no cover - the charity app without donations
        return None
    table = Donation._meta.db_table
    with connection.cursor() as cursor:
        if table not in connection.introspection.table_names(cursor):
            return None
    return table


# The transaction a reversal reverses. On PostgreSQL looked up by its key for reversals only:
# a plain join hashed the whole transaction table (10 million rows) to serve a few reversals.
_ORIGIN_JOIN = {
    "postgresql": """
              LEFT JOIN LATERAL (
                    SELECT o.kind, o.created_at FROM coalition_transaction o
                     WHERE t.reversal_of_id IS NOT NULL AND o.id = t.reversal_of_id
                    OFFSET 0
                   ) o ON true""",
    "sqlite": "LEFT JOIN coalition_transaction o ON o.id = t.reversal_of_id",
}


def _aggregate_sql(donation_table: str | None, vendor: str = "postgresql") -> str:
    terms_table = CommercialTerms._meta.db_table
    origin_join = _ORIGIN_JOIN[vendor]
    if donation_table:
        price = "COALESCE(d.donation_price, dm.donation_price)"
        joins = f"""
          LEFT JOIN {donation_table} d
                 ON l.account_kind = 'charity_received' AND d.transaction_id = l.origin_id
          LEFT JOIN {donation_table} dm
                 ON l.account_kind = 'charity_received' AND dm.match_transaction_id = l.origin_id
        """
    else:
        price, joins = "NULL", ""
    # PostgreSQL: keep only the legs on those accounts while reading the span, so the fenced
    # read holds half the rows; "+ 0" keeps the planner on the transaction-id range (the
    # account index would fetch every leg those accounts ever had).
    entry_filter = "AND account_id + 0 = ANY(%(accounts)s)" if vendor == "postgresql" else ""
    # Only table names from the models and fixed fragments are interpolated; values are bound.
    return f"""
        WITH terms AS (
            SELECT id, partner_id, valid_from,
                   LEAD(valid_from) OVER (PARTITION BY partner_id ORDER BY valid_from)
                       AS valid_to
              FROM {terms_table}
        ),
        -- Three fenced reads (MATERIALIZED: planned alone, never re-ordered into a
        -- nested loop over the whole ledger on a bad estimate), then hash joins:
        -- the partner, charity and programme accounts (a few dozen rows). Member wallets'
        -- legs (half the entries) need no price: what they moved is minus the rest, as
        -- every transaction sums to zero (aggregate_claims adds it).
        accounts AS MATERIALIZED (
            SELECT id, kind, partner_id, charity_id FROM coalition_account
             WHERE member_id IS NULL
        ),
        -- The entries in the span [lo, hi] of the run's claimed ids, one range read (exact:
        -- every claimed id is inside it; entries of unclaimed ids in it drop at the join).
        run_entries AS MATERIALIZED (
            SELECT transaction_id, account_id, points FROM coalition_entry
             WHERE transaction_id BETWEEN %(lo)s AND %(hi)s {entry_filter}
        ),
        -- The run's claimed transactions: its claims in id order merged with the same span.
        run_txns AS MATERIALIZED (
            SELECT t.id, t.kind, t.created_at, t.reversal_of_id
              FROM settlement_claim c
              JOIN coalition_transaction t ON t.id = c.transaction_id
             WHERE c.run_id = %(run)s AND t.id BETWEEN %(lo)s AND %(hi)s
        ),
        legs AS (
            SELECT a.kind AS account_kind, a.partner_id, a.charity_id,
                   CASE WHEN t.kind = 'reversal' THEN 1 ELSE 0 END AS is_reversal,
                   CASE WHEN COALESCE(o.kind, t.kind) = 'match' THEN 1 ELSE 0 END AS is_match,
                   COALESCE(o.created_at, t.created_at) AS priced_at,
                   COALESCE(t.reversal_of_id, t.id) AS origin_id,
                   e.points
              FROM run_entries e
              JOIN accounts a ON a.id = e.account_id
              JOIN run_txns t ON t.id = e.transaction_id
              {origin_join}
        )
        -- Partner and programme legs are priced by the terms in force; only charity legs
        -- (a few percent) look up their donation's price.
        SELECT l.account_kind, l.partner_id, l.charity_id, l.is_reversal, l.is_match,
               tr.id, NULL, SUM(l.points)
          FROM legs l
          LEFT JOIN terms tr
                 ON l.partner_id IS NOT NULL AND tr.partner_id = l.partner_id
                AND tr.valid_from <= l.priced_at
                AND (tr.valid_to IS NULL OR l.priced_at < tr.valid_to)
         WHERE l.account_kind <> 'charity_received'
         GROUP BY l.account_kind, l.partner_id, l.charity_id, l.is_reversal, l.is_match, tr.id
        UNION ALL
        SELECT l.account_kind, l.partner_id, l.charity_id, l.is_reversal, l.is_match,
               NULL, {price}, SUM(l.points)
          FROM legs l
          {joins}
         WHERE l.account_kind = 'charity_received'
         GROUP BY l.account_kind, l.partner_id, l.charity_id, l.is_reversal, l.is_match, {price}
    """  # noqa: S608


@dataclass(frozen=True)
class AggregateRow:
    account_kind: str
    partner_id: int | None
    charity_id: int | None
    is_reversal: bool
    is_match: bool
    terms_id: int | None
    donation_price: Decimal | None
    points: int


def aggregate_claims(*, run: SettlementRun) -> list[AggregateRow]:
    """The run's claimed entries summed per account kind, counterparty and price."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One big hash join, run a few times a month: room to hash in memory, and no
            # JIT compilation (half a second for a query that runs once).
            cursor.execute("SET LOCAL work_mem = '256MB'")
            cursor.execute("SET LOCAL jit = off")
        cursor.execute(
            "SELECT min(transaction_id), max(transaction_id) FROM settlement_claim "
            "WHERE run_id = %s",
            [run.pk],
        )
        lo, hi = cursor.fetchone()
        if lo is None:
            return []  # nothing claimed
        params = {"run": run.pk, "lo": lo, "hi": hi}
        if connection.vendor == "postgresql":
            # The non-wallet accounts, as one array (only PostgreSQL's SQL uses it; SQLite
            # could not even bind a list, which DEBUG's query log tries to do).
            cursor.execute("SELECT id FROM coalition_account WHERE member_id IS NULL")
            params["accounts"] = [row[0] for row in cursor.fetchall()]
        cursor.execute(_aggregate_sql(_donation_table(), connection.vendor), params)
        rows = cursor.fetchall()
    aggregated = [
        AggregateRow(
            account_kind=kind,
            partner_id=partner_id,
            charity_id=charity_id,
            is_reversal=bool(is_reversal),
            is_match=bool(is_match),
            terms_id=terms_id,
            donation_price=Decimal(str(price)) if price is not None else None,
            points=int(points),
        )
        for kind, partner_id, charity_id, is_reversal, is_match, terms_id, price, points in rows
    ]
    # Member wallets' legs are not read (half the entries, none priced): every claimed
    # transaction sums to zero, so together they moved minus everything else.
    aggregated.append(
        AggregateRow(
            account_kind=AccountKind.MEMBER_WALLET,
            partner_id=None,
            charity_id=None,
            is_reversal=False,
            is_match=False,
            terms_id=None,
            donation_price=None,
            points=-sum(row.points for row in aggregated),
        )
    )
    return aggregated


# --------------------------------------------------------------------------- 3. price and net


@dataclass
class PricedComponent:
    kind: str
    price: Decimal
    points: int  # signed for the counterparty: + owed to it, - owed by it
    terms_id: int | None = None

    @property
    def amount(self) -> Decimal:
        return Decimal(self.points) * self.price


@dataclass
class Movements:
    """Points moved by the claimed transactions outside partner and charity accounts."""

    wallets: int = 0  # net change of member wallets
    expired: int = 0  # into breakage
    operator_funded: int = 0  # out of the operator's marketing and adjustment accounts


@dataclass
class Priced:
    partners: dict[int, list[PricedComponent]] = field(default_factory=lambda: defaultdict(list))
    charities: dict[int, list[PricedComponent]] = field(default_factory=lambda: defaultdict(list))
    movements: Movements = field(default_factory=Movements)


def price_rows(rows: list[AggregateRow], *, default_donation_price: Decimal) -> Priced:
    """Turn aggregate rows into priced components per counterparty."""
    priced = Priced()
    terms_ids = {row.terms_id for row in rows if row.terms_id is not None}
    terms = CommercialTerms.objects.in_bulk(terms_ids)
    unpriced = sorted({row.partner_id for row in rows if row.partner_id and not row.terms_id})
    if unpriced:
        codes = ", ".join(Partner.objects.filter(pk__in=unpriced).values_list("code", flat=True))
        raise InvalidState(
            f"No commercial terms in force for some transactions of partner(s) {codes}: set "
            "terms covering them before settling",
            field="periodEnd",
        )
    for row in rows:
        kind = row.account_kind
        if kind == AccountKind.MEMBER_WALLET:
            priced.movements.wallets += row.points
        elif kind == AccountKind.BREAKAGE:
            priced.movements.expired += row.points
        elif kind in (AccountKind.OPERATOR_MARKETING, AccountKind.OPERATOR_ADJUSTMENT):
            priced.movements.operator_funded -= row.points
        elif kind == AccountKind.PARTNER_ISSUED:
            # The issued account is debited when points are issued: its entries are already
            # signed as the partner sees them (issuing costs it money).
            component = (
                (Component.MATCH_REVERSED if row.is_reversal else Component.MATCH)
                if row.is_match
                else (Component.ISSUED_REVERSED if row.is_reversal else Component.ISSUED)
            )
            priced.partners[row.partner_id].append(
                PricedComponent(
                    component, terms[row.terms_id].issuance_price, row.points, row.terms_id
                )
            )
        elif kind == AccountKind.PARTNER_REDEEMED:
            component = Component.REDEEMED_REVERSED if row.is_reversal else Component.REDEEMED
            priced.partners[row.partner_id].append(
                PricedComponent(
                    component, terms[row.terms_id].redemption_price, row.points, row.terms_id
                )
            )
        elif kind == AccountKind.CHARITY_RECEIVED:
            if row.is_match:
                component = Component.MATCH_RECEIVED
                if row.is_reversal:
                    component = Component.MATCH_RECEIVED_REVERSED
            else:
                component = Component.DONATED_REVERSED if row.is_reversal else Component.DONATED
            price = row.donation_price if row.donation_price is not None else default_donation_price
            priced.charities[row.charity_id].append(PricedComponent(component, price, row.points))
        else:  # pragma: no cover - a new account kind must be priced before it is settled
            raise InvalidState(f"Settlement does not know how to price {kind} entries")
    return priced


def _sum(components: list[PricedComponent], *kinds: str) -> tuple[int, Decimal]:
    chosen = [c for c in components if c.kind in kinds]
    return sum(c.points for c in chosen), sum((c.amount for c in chosen), Decimal(0))


def _decide(line: SettlementLine, *, minimum: Decimal, can_collect: bool, held: str) -> None:
    """Pay out, collect or carry forward the line's net."""
    net = line.net_amount
    if held:
        line.direction, line.status, line.hold_reason = "carry_forward", "carried_forward", held
    elif net >= minimum and net > 0:
        line.direction, line.status = "pay_out", "pending"
    elif net <= -minimum and net < 0 and can_collect:
        line.direction, line.status = "collect", "pending"
    else:
        line.direction, line.status = "carry_forward", "carried_forward"
        if net < 0 and not can_collect:
            line.hold_reason = "Owed by the charity: offset against its next donations"
        else:
            line.hold_reason = f"Below the minimum of {minimum} {line.currency}"


def _carried_lines(run: SettlementRun) -> dict[tuple[str, int], list[SettlementLine]]:
    """Amounts carried forward and not yet taken into a run, locked so that no other run
    takes them too."""
    pending = (
        SettlementLine.objects.select_for_update()
        .filter(status=SettlementLine.Status.CARRIED_FORWARD, carried_to_run__isnull=True)
        .exclude(run=run)
        .order_by("id")
    )
    carried: dict[tuple[str, int], list[SettlementLine]] = defaultdict(list)
    for line in pending:
        key = ("partner", line.partner_id) if line.partner_id else ("charity", line.charity_id)
        carried[key].append(line)
    return carried


def build_lines(*, run: SettlementRun, priced: Priced) -> list[SettlementLine]:
    """One line per partner and per charity with activity or a carried amount."""
    carried = _carried_lines(run)
    # Carried amounts that net to nothing, for a counterparty without activity, need no line.
    for key in [
        k for k, carried_in in carried.items() if not sum(c.net_amount for c in carried_in)
    ]:
        if key[1] not in (priced.partners if key[0] == "partner" else priced.charities):
            SettlementLine.objects.filter(pk__in=[c.pk for c in carried.pop(key)]).update(
                carried_to_run=run
            )
    partner_ids = set(priced.partners) | {i for kind, i in carried if kind == "partner"}
    charity_ids = set(priced.charities) | {i for kind, i in carried if kind == "charity"}
    partners = Partner.objects.in_bulk(partner_ids)
    charities = Charity.objects.in_bulk(charity_ids)
    mismatched = sorted(p.code for p in partners.values() if p.currency != run.currency)
    if mismatched:
        raise CurrencyMismatch(
            f"Partner(s) {', '.join(mismatched)} settle in another currency than the "
            f"programme's {run.currency}",
            field="periodEnd",
        )
    lines: list[tuple[SettlementLine, list[PricedComponent], list[SettlementLine]]] = []
    for partner_id in sorted(partner_ids):
        components = priced.partners.get(partner_id, [])
        line = SettlementLine(run=run, partner=partners[partner_id], currency=run.currency)
        issued, issuance = _sum(components, Component.ISSUED, Component.ISSUED_REVERSED)
        line.issued_points, line.issuance_amount = -issued, -issuance
        line.issued_reversed_points, _ = _sum(components, Component.ISSUED_REVERSED)
        redeemed, line.redemption_amount = _sum(
            components, Component.REDEEMED, Component.REDEEMED_REVERSED
        )
        line.redeemed_points = redeemed
        line.redeemed_reversed_points = -_sum(components, Component.REDEEMED_REVERSED)[0]
        matched, match = _sum(components, Component.MATCH, Component.MATCH_REVERSED)
        line.matched_points, line.match_amount = -matched, -match
        lines.append((line, components, carried.get(("partner", partner_id), [])))
    for charity_id in sorted(charity_ids):
        components = priced.charities.get(charity_id, [])
        line = SettlementLine(run=run, charity=charities[charity_id], currency=run.currency)
        line.donated_points, line.donation_amount = _sum(
            components, Component.DONATED, Component.DONATED_REVERSED
        )
        line.matched_points, line.match_amount = _sum(
            components, Component.MATCH_RECEIVED, Component.MATCH_RECEIVED_REVERSED
        )
        lines.append((line, components, carried.get(("charity", charity_id), [])))

    saved = []
    for line, components, carried_in in lines:
        line.exact_amount = sum((c.amount for c in components), Decimal(0))
        # To Stripe's step where it is coarser than the currency's (KWD): payable exactly.
        line.rounded_amount = round_for_stripe(line.exact_amount, run.currency)
        line.rounding_remainder = line.exact_amount - line.rounded_amount
        line.carried_in_amount = sum((c.net_amount for c in carried_in), Decimal(0))
        line.net_amount = line.rounded_amount + line.carried_in_amount
        if line.partner_id:
            _decide(line, minimum=partner_minimum(), can_collect=True, held="")
        else:
            charity = line.charity
            held = (
                ""
                if charity.status == Charity.Status.VERIFIED
                else f"Charity {charity.status}: its money is held until it is verified again"
            )
            _decide(line, minimum=charity_minimum(), can_collect=False, held=held)
        line.save()
        SettlementLineComponent.objects.bulk_create(
            [
                SettlementLineComponent(
                    line=line,
                    kind=c.kind,
                    terms_id=c.terms_id,
                    price=c.price,
                    points=c.points,
                    amount=c.amount,
                )
                for c in components
            ]
        )
        if carried_in:
            SettlementLine.objects.filter(pk__in=[c.pk for c in carried_in]).update(
                carried_to_run=run
            )
        saved.append(line)
    return saved


# --------------------------------------------------------------------------- 4. total


def round_fraction(value: Fraction, currency: str) -> Decimal:
    """An exact rational rounded once, half-even, to the currency's minor unit."""
    exponent = minor_exponent(currency)
    scaled = value * 10**exponent
    whole, remainder = divmod(scaled.numerator, scaled.denominator)
    twice = 2 * remainder
    if twice > scaled.denominator or (twice == scaled.denominator and whole % 2 == 1):
        whole += 1
    return Decimal(whole).scaleb(-exponent)


def fraction_to_decimal(value: Fraction) -> Decimal:
    """An exact rational that is a finite decimal, as a Decimal (else ValueError)."""
    denominator = value.denominator
    places = 0
    while denominator % 10 == 0:
        denominator //= 10
        places += 1
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
            places += 1
    if denominator != 1:
        raise ValueError(f"{value} is not a finite decimal")
    with localcontext(MONEY_CONTEXT):
        return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(
            Decimal(1).scaleb(-places)
        )


def _previous_run(run: SettlementRun) -> SettlementRun | None:
    return (
        SettlementRun.objects.filter(pk__lt=run.pk)
        .exclude(status=SettlementRun.Status.DISCARDED)
        .order_by("-pk")
        .first()
    )


def compute_totals(*, run: SettlementRun, lines: list[SettlementLine], movements: Movements):
    """Pay-outs, collections, carry, operator revenue and the float (docs/settlement.md)."""
    currency = run.currency
    previous = _previous_run(run)
    run.outstanding_points_start = previous.outstanding_points_end if previous else 0
    run.points_float_start = previous.points_float_end if previous else Decimal(0)

    partner_lines = [line for line in lines if line.partner_id]
    charity_lines = [line for line in lines if line.charity_id]
    run.issued_points = sum(line.issued_points for line in partner_lines)
    run.redeemed_points = sum(line.redeemed_points for line in partner_lines)
    run.matched_points = sum(line.matched_points for line in partner_lines)
    run.donated_points = sum(line.donated_points for line in charity_lines)
    run.expired_points = movements.expired
    run.operator_funded_points = movements.operator_funded
    run.outstanding_points_end = run.outstanding_points_start + movements.wallets

    run.issuance_amount = sum((line.issuance_amount for line in partner_lines), Decimal(0))
    run.match_amount = sum((line.match_amount for line in partner_lines), Decimal(0))
    run.redemption_amount = sum((line.redemption_amount for line in partner_lines), Decimal(0))
    donation = sum((line.donation_amount for line in charity_lines), Decimal(0))
    match_disbursed = sum((line.match_amount for line in charity_lines), Decimal(0))
    run.donation_amount = donation + match_disbursed

    pay_outs = [line.net_amount for line in lines if line.direction == "pay_out"]
    collections = [line.net_amount for line in lines if line.direction == "collect"]
    carried = [line.net_amount for line in lines if line.direction == "carry_forward"]
    run.total_paid_out = sum(pay_outs, Decimal(0))
    run.total_collected = -sum(collections, Decimal(0))
    run.carried_forward = sum(carried, Decimal(0))
    run.carried_in = sum((line.carried_in_amount for line in lines), Decimal(0))
    line_rounding = sum((Fraction(line.rounding_remainder) for line in lines), Fraction(0))

    # Points leaving and entering circulation; the ledger balances, so the wallets' change
    # is exactly what came in less what went out (checked: a new kind of entry would break it).
    inflow = run.issued_points + run.operator_funded_points
    outflow = run.redeemed_points + run.donated_points + run.expired_points
    if run.outstanding_points_end != run.outstanding_points_start + inflow - outflow:
        raise AssertionError(
            f"run {run.pk}: wallets moved {movements.wallets} points but inflow {inflow} - "
            f"outflow {outflow} says otherwise: an entry was not classified"
        )

    # The carrying price: money received per point available in the period (weighted
    # average of the float brought forward and this period's issuance).
    float_start = Fraction(run.points_float_start)
    issuance = Fraction(run.issuance_amount)
    available = run.outstanding_points_start + inflow
    if available > 0:
        carrying = (float_start + issuance) / available
        write_off = Fraction(0)
    else:  # nothing outstanding: whatever money is left belongs to the operator
        carrying = Fraction(0)
        write_off = float_start + issuance
    float_exact = run.outstanding_points_end * carrying
    spread_exact = (
        carrying * (run.redeemed_points + run.donated_points)
        - Fraction(run.redemption_amount)
        - Fraction(donation)
        + write_off
    )
    breakage_exact = carrying * run.expired_points
    match_exact = Fraction(run.match_amount) - Fraction(match_disbursed)

    run.points_float_end = round_fraction(float_exact, currency)
    run.spread_revenue = round_fraction(spread_exact, currency)
    run.breakage_revenue = round_fraction(breakage_exact, currency)
    run.match_revenue = round_fraction(match_exact, currency)
    run.rounding_revenue = fraction_to_decimal(
        line_rounding
        + (float_exact - Fraction(run.points_float_end))
        + (spread_exact - Fraction(run.spread_revenue))
        + (breakage_exact - Fraction(run.breakage_revenue))
        + (match_exact - Fraction(run.match_revenue))
    )
    run.operator_revenue = (
        run.spread_revenue + run.match_revenue + run.breakage_revenue + run.rounding_revenue
    )
    run.carrying_price = round(Decimal(carrying.numerator) / Decimal(carrying.denominator), 10)
    run.float_start = run.points_float_start + run.carried_in
    run.float_end = run.points_float_end + run.carried_forward

    if run.total_collected - run.total_paid_out != run.operator_revenue + (
        run.float_end - run.float_start
    ):
        raise AssertionError(f"run {run.pk}: the totals do not tie")  # a programming error


def compute_run(*, run: SettlementRun) -> None:
    """Claim, aggregate, price, net and total a new run (inside its creating transaction)."""
    run.claimed_transactions = claim_transactions(run=run)
    rows = aggregate_claims(run=run)
    with localcontext(MONEY_CONTEXT):
        priced = price_rows(rows, default_donation_price=programme_get().donation_price)
        lines = build_lines(run=run, priced=priced)
        compute_totals(run=run, lines=lines, movements=priced.movements)
    run.save()

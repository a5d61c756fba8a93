"""The database crashes under load (issue 9): a throwaway PostgreSQL cluster, the project
served by gunicorn over it, tills recording purchases from threads — and `pg_ctl stop -m
immediate` in the middle, then a restart. Every purchase that was answered with success is
in the ledger afterwards, none twice; the tills retry what failed with the same idempotency
keys; `check_ledger` is clean."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field

import psycopg2
import pytest
import requests

from tests.reliability.conftest import PROJECT, PYTHON, LiveServer, manage, project_env

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RECORD = """mutation($input: RecordPurchaseInput!) { recordPurchase(input: $input) {
  transaction { id points } errors { code message } } }"""
ENROLL = """mutation($input: EnrollMemberInput!) { enrollMember(input: $input) {
  member { memberNumber } errors { code message } } }"""
TILLS = 6


def _pk(global_id: str) -> int:
    return int(base64.b64decode(global_id).decode().split(":", 1)[1])


@dataclass
class Till:
    url: str
    api_key: str
    members: list[str]
    number: int
    answered: dict[str, int] = field(default_factory=dict)  # key -> transaction pk
    failed: dict[str, dict] = field(default_factory=dict)  # key -> request input
    errors: list[str] = field(default_factory=list)

    def purchase(self, key: str, purchase: dict, timeout: float = 10) -> int | None:
        """One attempt; the transaction pk on success, None on any failure."""
        try:
            response = requests.post(
                self.url,
                json={"query": RECORD, "variables": {"input": purchase}},
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=timeout,
            )
        except requests.RequestException as exc:
            self.errors.append(type(exc).__name__)
            return None
        if response.status_code != 200:
            self.errors.append(f"HTTP {response.status_code}")
            return None
        body = response.json()
        payload = (body.get("data") or {}).get("recordPurchase") or {}
        if body.get("errors") or payload.get("errors") or not payload.get("transaction"):
            self.errors.append(str(body)[:200])
            return None
        return _pk(payload["transaction"]["id"])

    def run(self, stop: threading.Event) -> None:
        n = 0
        while not stop.is_set():
            key = f"till{self.number}-{n}"
            purchase = {
                "memberNumber": self.members[n % len(self.members)],
                "amount": f"{10 + n % 7}.00",
                "currency": "USD",
                "reference": key,
                "idempotencyKey": key,
            }
            pk = self.purchase(key, purchase)
            if pk is None:
                self.failed[key] = purchase
                time.sleep(0.05)
            else:
                self.answered[key] = pk
            n += 1


def _ledger(database_url: str, partner_caller_prefix: str = "partner:") -> dict[str, list[int]]:
    """idempotency key -> transaction pks, read straight from the database."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT idempotency_key, id FROM coalition_transaction WHERE caller LIKE %s",
            [partner_caller_prefix + "%"],
        )
        rows = cursor.fetchall()
    ledger: dict[str, list[int]] = {}
    for key, pk in rows:
        ledger.setdefault(key, []).append(pk)
    return ledger


def test_every_answered_purchase_survives_a_database_crash(throwaway_cluster, tmp_path):
    # Given the project migrated into a cluster of its own, a partner, members and a server,
    env = project_env(DATABASE_URL=throwaway_cluster.url(), CONN_MAX_AGE="60")
    env.pop("CELERY_BROKER_URL", None)  # follow-up work in-process: this is about the database
    manage("migrate", "--no-input", "-v0", env=env, timeout=300)
    api_key = manage(
        "create_partner", "--code", "CRASH", "--name", "Crash Stores", "--currency", "USD",
        "--earn-rate", "1", "--issuance-price", "0.0100", "--redemption-price", "0.0080",
        env=env,
    ).strip().splitlines()[-1]  # fmt: skip
    server = LiveServer(env=env, log=tmp_path / "gunicorn.log", workers=2, threads=2)
    try:
        url = server.url + "/graphql/"
        members = []
        for n in range(8):
            response = requests.post(
                url,
                json={
                    "query": ENROLL,
                    "variables": {
                        "input": {
                            "email": f"crash{n}@example.com",
                            "displayName": f"Crash {n}",
                            "idempotencyKey": f"enrol-{n}",
                        }
                    },
                },
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=10,
            ).json()
            members.append(response["data"]["enrollMember"]["member"]["memberNumber"])

        # When tills record purchases and the database crashes in the middle,
        tills = [Till(url, api_key, members, number) for number in range(TILLS)]
        stop = threading.Event()
        threads = [threading.Thread(target=till.run, args=(stop,)) for till in tills]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        before_crash = sum(len(till.answered) for till in tills)
        throwaway_cluster.crash()
        time.sleep(1.5)
        throwaway_cluster.start()
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(30)

        # and the tills retry what failed, with the same keys,
        for till in tills:
            for key, purchase in list(till.failed.items()):
                for _attempt in range(20):
                    pk = till.purchase(key, purchase)
                    if pk is not None:
                        # A retry of a purchase that had committed replays the same one.
                        if key in till.answered:
                            assert till.answered[key] == pk
                        till.answered[key] = pk
                        break
                    time.sleep(0.25)
                else:
                    pytest.fail(f"{key} still fails after the restart: {till.errors[-3:]}")
    finally:
        server.stop()

    # then every answered purchase is in the ledger once, under the transaction we were told,
    ledger = _ledger(throwaway_cluster.url())
    answered = {key: pk for till in tills for key, pk in till.answered.items()}
    failures = sum(len(till.failed) for till in tills)
    print(  # the figures, for the report (pytest -s)
        f"\ncrash test: {before_crash} answered before the crash, {len(answered)} in all, "
        f"{failures} failed during the crash and were retried"
    )
    assert before_crash > 0 and failures > 0
    assert {key: pks for key, pks in ledger.items() if len(pks) > 1} == {}
    assert set(ledger) == set(answered)
    assert {key: pks[0] for key, pks in ledger.items()} == answered
    # and the ledger proves its invariants.
    assert "ledger ok" in manage("check_ledger", env=env)
    assert os.path.exists(throwaway_cluster.log)


EXPIRY_SETUP = """
from datetime import UTC, datetime
from coalition.models import Programme
from coalition.services import programme_get
from tests import factories
programme = programme_get()
programme.expiry_policy = Programme.ExpiryPolicy.FIXED
programme.expiry_months = 12
programme.min_redemption_points = 1
programme.save()
partner = factories.PartnerFactory()
for n in range({members}):
    factories.earn(factories.member(), partner, 10 + n % 7, now=datetime(2030, 1, 15, tzinfo=UTC))
"""
EXPIRY_SWEEP = """
from datetime import UTC, datetime
from coalition.services import points_expire_due
print("expired", points_expire_due(now=datetime(2031, 2, 1, tzinfo=UTC), batch_size={chunk}))
"""


def _expiries(database_url: str) -> dict[int, list[int]]:
    """member id -> the points of each of its EXPIRE transactions."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT member_id, member_points FROM coalition_transaction WHERE kind = 'expire'"
        )
        rows = cursor.fetchall()
    found: dict[int, list[int]] = {}
    for member_id, points in rows:
        found.setdefault(member_id, []).append(-points)
    return found


def test_a_database_crash_in_the_middle_of_an_expiry_sweep_loses_no_point_and_expires_none_twice(
    throwaway_cluster, tmp_path
):
    # Given 1,500 members with 10-16 points each that expired, in a cluster of its own
    members = 1500
    env = project_env(DATABASE_URL=throwaway_cluster.url(), CONN_MAX_AGE="60")
    env.pop("CELERY_BROKER_URL", None)
    manage("migrate", "--no-input", "-v0", env=env, timeout=300)
    manage("shell", "-c", EXPIRY_SETUP.format(members=members), env=env, timeout=300)
    due = {n: 10 + n % 7 for n in range(members)}

    # When the sweep runs in small chunks (each commits without waiting for the disk) and the
    # database stops like a power cut while it is under way,
    log = open(tmp_path / "sweep.log", "w")  # noqa: SIM115 - closed below
    sweep = subprocess.Popen(
        [PYTHON, "manage.py", "shell", "-c", EXPIRY_SWEEP.format(chunk=5)],
        cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(_expiries(throwaway_cluster.url())) < 100:
            assert time.monotonic() < deadline, "the sweep never started"
            time.sleep(0.02)
        throwaway_cluster.crash()
        crashed_mid_sweep = sweep.poll() is None
        sweep.wait(60)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        log.close()
    throwaway_cluster.start()

    # then the database comes back consistent, with some of the chunks (at most the last few
    # committed ones are gone) and no half chunk,
    survived = _expiries(throwaway_cluster.url())
    print(f"\nexpiry crash: {len(survived)} of {members} members' expiries survived the crash")
    assert crashed_mid_sweep and sweep.returncode != 0
    assert 0 < len(survived) < members
    assert all(len(points) == 1 for points in survived.values())
    assert "ledger ok" in manage("check_ledger", env=env)

    # and the next sweep expires exactly what was left: every member's due points once.
    output = manage("shell", "-c", EXPIRY_SWEEP.format(chunk=250), env=env, timeout=300)
    assert f"expired {sum(due.values()) - sum(p[0] for p in survived.values())}" in output
    after = _expiries(throwaway_cluster.url())
    assert len(after) == members
    assert all(len(points) == 1 for points in after.values())
    assert sorted(points[0] for points in after.values()) == sorted(due.values())
    with psycopg2.connect(throwaway_cluster.url()) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(sum(balance), 0) FROM coalition_account "
            "WHERE kind = 'member_wallet' AND balance <> 0"
        )
        assert cursor.fetchone() == (0, 0)
    assert "ledger ok" in manage("check_ledger", env=env)

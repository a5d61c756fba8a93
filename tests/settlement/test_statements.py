"""Statement downloads: a partner gets its own only (by API key), finance staff every one
(staff token or admin session), nobody else anything; the ready webhook is recorded."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest

from partners.services import api_key_create
from settlement import services
from tests.api.conftest import staff_token_for

from .conftest import days, make_partner

pytestmark = pytest.mark.django_db


@pytest.fixture
def run_with_two_partners(settlement_programme, base_time, post, finance):
    from tests import factories

    t0 = base_time
    alpha = make_partner("ALPHA", issuance="0.01", redemption="0.008", valid_from=t0 - days(9))
    beta = make_partner("BETA", issuance="0.01", redemption="0.008", valid_from=t0 - days(9))
    member = factories.member()
    post.earn(member, alpha, 5_000, t0 - days(3))
    post.burn(member, beta, 2_500, t0 - days(2))
    run = services.run_create(period_end=t0 - timedelta(seconds=1), created_by=finance)
    return {"run": run, "alpha": alpha, "beta": beta}


def url(run, partner) -> str:
    return f"/settlement/runs/{run.pk}/statements/partner/{partner.pk}.csv"


def rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode())))


def staff_token(user, *, finance=True) -> str:
    return staff_token_for(user, finance=finance)


def test_a_partner_downloads_its_own_statement(client, run_with_two_partners):
    run, alpha = run_with_two_partners["run"], run_with_two_partners["alpha"]
    _, key = api_key_create(partner=alpha, scopes=["read"])

    response = client.get(url(run, alpha), HTTP_AUTHORIZATION=f"Bearer {key}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    body = rows(response)
    assert body[0][:4] == ["run", "period_end", "counterparty", "row"]
    issued = next(row for row in body if row[3] == "issued")
    assert (issued[5], issued[6], issued[7]) == ("5000", "0.01", "-50.00")
    net = next(row for row in body if row[3] == "net")
    assert Decimal(net[7]) == Decimal("-50.00") and "collect" in net[4]


def test_a_partner_cannot_read_another_partners_statement(client, run_with_two_partners):
    run = run_with_two_partners["run"]
    _, key = api_key_create(partner=run_with_two_partners["alpha"], scopes=["read"])

    response = client.get(
        url(run, run_with_two_partners["beta"]), HTTP_AUTHORIZATION=f"Bearer {key}"
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "PERMISSION_DENIED"


def test_a_key_without_the_read_scope_is_refused(client, run_with_two_partners):
    run, alpha = run_with_two_partners["run"], run_with_two_partners["alpha"]
    _, key = api_key_create(partner=alpha, scopes=["earn"])

    assert client.get(url(run, alpha), HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 401


def test_anonymous_and_bad_keys_are_refused(client, run_with_two_partners):
    run, alpha = run_with_two_partners["run"], run_with_two_partners["alpha"]
    assert client.get(url(run, alpha)).status_code == 401
    bad = client.get(url(run, alpha), HTTP_AUTHORIZATION="Bearer ck_live_nope")
    assert bad.status_code == 401


def test_finance_staff_read_every_statement_and_the_run_export(
    client, run_with_two_partners, approver
):
    run = run_with_two_partners["run"]
    token = staff_token(approver)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    for partner in (run_with_two_partners["alpha"], run_with_two_partners["beta"]):
        assert client.get(url(run, partner), **auth).status_code == 200
    export = client.get(f"/settlement/runs/{run.pk}/lines.csv", **auth)
    assert export.status_code == 200
    assert len(rows(export)) == 1 + run.lines.count()


def test_staff_without_finance_permission_are_refused(client, run_with_two_partners, approver):
    run = run_with_two_partners["run"]
    token = staff_token(approver, finance=False)

    response = client.get(
        url(run, run_with_two_partners["alpha"]), HTTP_AUTHORIZATION=f"Bearer {token}"
    )

    assert response.status_code == 401


def test_a_superuser_session_reads_statements(client, run_with_two_partners, django_user_model):
    admin = django_user_model.objects.create_superuser("boss", password="x-Str0ng-pass")
    client.force_login(admin)

    response = client.get(url(run_with_two_partners["run"], run_with_two_partners["beta"]))

    assert response.status_code == 200
    net = next(row for row in rows(response) if row[3] == "net")
    assert Decimal(net[7]) == Decimal("20.00")


def test_an_unknown_statement_is_not_found(client, run_with_two_partners, approver):
    token = staff_token(approver)
    run = run_with_two_partners["run"]

    response = client.get(
        f"/settlement/runs/{run.pk}/statements/partner/999999.csv",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )

    assert response.status_code == 404


def test_approval_announces_each_partners_statement(
    run_with_two_partners, approver, django_capture_on_commit_callbacks
):
    from partners.models import WebhookEndpoint, WebhookEvent

    alpha = run_with_two_partners["alpha"]
    WebhookEndpoint.objects.create(
        partner=alpha, url="https://hooks.alpha.example/coalition", secret="whsec_alpha"
    )

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.run_approve(run=run_with_two_partners["run"], approved_by=approver)
    assert callbacks  # the announcement waits for the approval's commit
    with django_capture_on_commit_callbacks(execute=False):  # (no delivery attempt here)
        assert services.statements_announce(run_id=run_with_two_partners["run"].pk) == 1

    event = WebhookEvent.objects.get(partner=alpha)
    assert event.type == "settlement.statement_ready"
    assert event.payload["statementUrl"] == url(run_with_two_partners["run"], alpha)
    assert event.payload["netAmount"] == {"amount": "-50.00", "currency": "USD"}
    # Beta has no endpoint: nothing recorded for it; announcing again adds nothing.
    assert services.statements_announce(run_id=run_with_two_partners["run"].pk) == 0
    assert WebhookEvent.objects.count() == 1

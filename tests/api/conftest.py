"""API test helpers: a GraphQL client over Django's test client, and the callers of the
permission matrix (anonymous, member, other member, partner, other partner, staff)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from graphql_relay import to_global_id

from tests import factories

PASSWORD = "correct-horse-battery"
CALLERS = ["anonymous", "member", "other_member", "partner", "other_partner", "staff"]


@dataclass
class Response:
    status: int
    body: dict
    headers: dict

    @property
    def data(self):
        return self.body.get("data")

    @property
    def errors(self) -> list:
        return self.body.get("errors") or []

    @property
    def codes(self) -> list:
        return [error.get("extensions", {}).get("code") for error in self.errors]

    def payload(self, field: str) -> dict:
        """The payload of a mutation field, asserting the request itself succeeded."""
        assert self.status == 200, self.body
        assert not self.errors, self.errors
        return self.data[field]


class Api:
    def __init__(self, client):
        self.client = client

    def __call__(self, query: str, variables: dict | None = None, *, token=None, **headers):
        if token:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        response = self.client.post(
            "/graphql/",
            data=json.dumps({"query": query, "variables": variables or {}}),
            content_type="application/json",
            **headers,
        )
        body = json.loads(response.content) if response.content else {}
        return Response(response.status_code, body, dict(response.headers))

    def mutate(self, field: str, query: str, input: dict, *, token=None) -> dict:
        """Run a one-field mutation document; return its payload."""
        return self(query, {"input": input}, token=token).payload(field)


@pytest.fixture
def api(client):
    return Api(client)


def gid(type_name: str, pk: int) -> str:
    return to_global_id(type_name, pk)


def key_for(partner, scopes=("earn", "burn", "read")) -> str:
    from partners.services import api_key_create

    return api_key_create(partner=partner, scopes=list(scopes))[1]


def member_with_password(**kwargs):
    kwargs.setdefault("password", PASSWORD)
    return factories.member(**kwargs)


def token_for(member) -> str:
    from api.core.auth import member_token_issue

    return member_token_issue(member)[0]


def staff_token_for(user, *, finance: bool = True) -> str:
    from api.core.auth import staff_token_create
    from api.management.commands.create_staff_token import finance_group

    if finance:
        user.groups.add(finance_group())
    else:
        user.groups.remove(finance_group())  # staff, and nothing more
    return staff_token_create(user=user)[1]


@pytest.fixture
def brand(db, programme):
    """A partner onboarded with terms (issuance 0.01, redemption 0.008) and a full key."""
    partner, key = factories.onboarded_partner()
    return SimpleNamespace(partner=partner, key=key)


@pytest.fixture
def other_brand(db, programme):
    partner, key = factories.onboarded_partner()
    return SimpleNamespace(partner=partner, key=key)


@pytest.fixture
def shopper(db, programme, brand):
    """A member with a password and 1,000 points earned at `brand`."""
    member = member_with_password()
    factories.earn(member, brand.partner, 1000)
    return member


@pytest.fixture
def other_member(db, programme):
    return member_with_password()


@pytest.fixture
def finance_token(staff_user):
    return staff_token_for(staff_user)


@pytest.fixture
def callers(shopper, other_member, brand, other_brand, finance_token):
    """Token of each caller of the permission matrix (None: anonymous). "member" is the
    shopper, "partner" the brand the shopper earned at."""
    return {
        "anonymous": None,
        "member": token_for(shopper),
        "other_member": token_for(other_member),
        "partner": brand.key,
        "other_partner": other_brand.key,
        "staff": finance_token,
    }


def everything() -> dict:
    """All state an API write can change: ledger, partner side, charity side, webhooks."""
    from api.models import StaffToken
    from partners.models import WebhookEndpoint, WebhookEvent

    return {
        **factories.charity_state(),
        **factories.partner_state(),
        "webhook_endpoints": WebhookEndpoint.objects.count(),
        "webhook_events": WebhookEvent.objects.count(),
        "staff_tokens": StaffToken.objects.count(),
    }


# --------------------------------------------------------------------------- redemption


def codes(payload: dict) -> list[tuple]:
    """The (code, field) of each error of a payload (or of one result of a batch)."""
    return [(error["code"], error["field"]) for error in payload["errors"]]


@pytest.fixture
def hold(shopper, brand):
    """400 of the shopper's points held by `brand`."""
    return factories.hold(shopper, brand.partner, 400)


def hold_input(hold, idempotency_key: str, **overrides) -> dict:
    """The input of captureRedemption or voidRedemption for `hold`."""
    return {
        "holdId": gid("RedemptionHold", hold.pk),
        "idempotencyKey": idempotency_key,
        **overrides,
    }


def assert_only_the_holds_partner(api, callers, caller, field: str, query: str, input: dict):
    """The permission matrix of an operation on a hold: only the partner that took it may;
    to another partner it does not exist (NOT_FOUND, like a wrong id)."""
    before = everything()

    payload = api.mutate(field, query, input, token=callers[caller])

    if caller == "partner":
        assert payload["errors"] == []
    elif caller == "other_partner":
        assert codes(payload) == [("NOT_FOUND", "input.holdId")]
        assert everything() == before
    else:
        assert codes(payload) == [("PERMISSION_DENIED", None)]
        assert everything() == before


def assert_burn_scope_required(api, brand, field: str, query: str, input: dict) -> dict:
    """A key of the brand without the burn scope is refused and writes nothing."""
    key = key_for(brand.partner, ("earn", "read"))
    before = everything()

    payload = api.mutate(field, query, input, token=key)

    assert codes(payload) == [("PERMISSION_DENIED", None)]
    assert everything() == before
    return payload


# --------------------------------------------------------------------------- webhooks


class Receiver:
    """A local HTTP endpoint that records what it is sent and answers `status`."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self
        self.requests: list[dict] = []
        self.status = 200

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def events(self) -> list[dict]:
        return [json.loads(request["body"]) for request in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    settings.WEBHOOKS = {
        "TIMEOUT": 5,
        "RETRY_FOR_HOURS": 72,
        "ALLOW_HTTP": True,
        "ALLOW_PRIVATE_HOSTS": True,
    }
    hooks = Receiver()
    yield hooks
    hooks.close()


# --------------------------------------------------------------------------- settlement

CREATE_RUN = """mutation($input: CreateSettlementRunInput!) { createSettlementRun(input: $input) {
  run { id status periodEnd totalPaidOut { amount currency } totalCollected { amount currency }
        operatorRevenue { amount currency }
        lines { id partner { code } charity { name } issuedPoints redeemedPoints donatedPoints
                netAmount { amount currency } direction status stripeObjectId } }
  errors { field code message } } }"""
APPROVE_RUN = """mutation($input: SettlementRunActionInput!) { approveSettlementRun(input: $input) {
  run { id status } errors { field code message } } }"""
EXECUTE_RUN = """mutation($input: SettlementRunActionInput!) { executeSettlementRun(input: $input) {
  run { id status } errors { field code message } } }"""


@pytest.fixture
def approver_token(db, django_user_model):
    """A second finance user: a run is approved by someone other than its creator."""
    approver = django_user_model.objects.create_user(username="approver", is_staff=True)
    return staff_token_for(approver)


def now_iso() -> str:
    from django.utils import timezone

    return timezone.now().isoformat()

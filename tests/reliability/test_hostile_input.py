"""Bad and hostile input (issue 9): malformed JSON, huge bodies, deep nesting, unicode edge
cases in every string input, numbers beyond 64 bits, decimals with too many places. Each
is answered with a clear error (never a 500), and nothing is written."""

from __future__ import annotations

import json

import pytest
from graphql_relay import to_global_id

from coalition.selectors import ledger_check
from tests import factories
from tests.api.conftest import Api, everything, key_for, member_with_password, token_for

pytestmark = pytest.mark.django_db

NUL = "a\x00b"
LONE_SURROGATE = "a\ud800b"
RTL = "\u202eمرحبا بالعالم\u202c"
EMOJI = "🎉👩🏽‍💻🇳🇱"
LONG = "x" * 10_000
# Refused outright: no database can hold them, or beyond every length limit.
REFUSED_TEXT = {"nul": NUL, "lone_surrogate": LONE_SURROGATE, "10k_chars": LONG}
# Legal text: a write may take it (and must give it back as sent), or refuse it clearly.
ODD_TEXT = {"rtl": RTL, "emoji": EMOJI, "zero_width": "a\u200bb", "combining": "e\u0301" * 20}


class World:
    def __init__(self):
        self.partner, _ = factories.onboarded_partner()
        self.key = key_for(self.partner)
        self.member = member_with_password()
        self.member_token = token_for(self.member)
        self.charity = factories.CharityFactory()
        self.earn = factories.earn(self.member, self.partner, 1000)
        self.hold = factories.hold(self.member, self.partner, 10)


@pytest.fixture
def world(programme):
    return World()


def operations(world: World) -> dict[str, tuple[str, str, dict, str]]:
    """Every mutation with string input: (document, credential, valid input, field)."""
    number = world.member.member_number
    return {
        "enrollMember": (
            "mutation($input: EnrollMemberInput!) { enrollMember(input: $input) { errors { code } } }",  # noqa: E501
            world.key,
            {
                "email": "new@example.com",
                "displayName": "New",
                "password": "long-enough-pass",
                "birthDate": "1990-01-01",
                "referralCode": None,
                "idempotencyKey": "e1",
            },
            "",
        ),
        "recordPurchase": (
            "mutation($input: RecordPurchaseInput!) { recordPurchase(input: $input) { errors { code } } }",  # noqa: E501
            world.key,
            {
                "memberNumber": number,
                "amount": "10.00",
                "currency": "USD",
                "reference": "r1",
                "idempotencyKey": "p1",
                "storeCode": None,
                "lineItems": [
                    {"sku": "S1", "category": "food", "quantity": 1, "unitPrice": "10.00"}
                ],
            },
            "",
        ),
        "redeemPoints": (
            "mutation($input: RedeemPointsInput!) { redeemPoints(input: $input) { errors { code } } }",  # noqa: E501
            world.key,
            {"memberNumber": number, "points": 5, "reference": "r2", "idempotencyKey": "b1"},
            "",
        ),
        "authorizeRedemption": (
            "mutation($input: AuthorizeRedemptionInput!) { authorizeRedemption(input: $input) { errors { code } } }",  # noqa: E501
            world.key,
            {"memberNumber": number, "points": 5, "reference": "r3", "idempotencyKey": "h1"},
            "",
        ),
        "captureRedemption": (
            "mutation($input: CaptureRedemptionInput!) { captureRedemption(input: $input) { errors { code } } }",  # noqa: E501
            world.key,
            {"holdId": to_global_id("RedemptionHold", world.hold.pk), "idempotencyKey": "c1"},
            "",
        ),
        "voidRedemption": (
            "mutation($input: VoidRedemptionInput!) { voidRedemption(input: $input) { errors { code } } }",  # noqa: E501
            world.key,
            {"holdId": to_global_id("RedemptionHold", world.hold.pk), "idempotencyKey": "v1"},
            "",
        ),
        "reverseTransaction": (
            "mutation($input: ReverseTransactionInput!) { reverseTransaction(input: $input) { errors { code } } }",  # noqa: E501
            world.key,
            {
                "transactionId": to_global_id("PointsTransaction", world.earn.pk),
                "points": 1,
                "reason": "refund",
                "idempotencyKey": "x1",
            },
            "",
        ),
        "registerWebhookEndpoint": (
            "mutation($input: RegisterWebhookEndpointInput!) { registerWebhookEndpoint(input: $input) { errors { code } } }",  # noqa: E501
            world.key,
            {"url": "https://example.com/hooks", "idempotencyKey": "w1"},
            "",
        ),
        "donatePoints": (
            "mutation($input: DonatePointsInput!) { donatePoints(input: $input) { errors { code } } }",  # noqa: E501
            world.member_token,
            {
                "charityId": to_global_id("Charity", world.charity.pk),
                "points": 100,
                "idempotencyKey": "d1",
            },
            "",
        ),
        "memberLogin": (
            "mutation($input: MemberLoginInput!) { memberLogin(input: $input) { errors { code } } }",  # noqa: E501
            None,
            {"email": world.member.email, "password": "wrong-password"},
            "",
        ),
    }


def string_fields(value, path=()):
    """Paths of every string in an input (nested objects and lists included)."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_fields(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_fields(item, (*path, index))


def with_value(input_: dict, path: tuple, value):
    copy = json.loads(json.dumps(input_))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


def send(client, body: str, token=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    response = client.post("/graphql/", body, content_type="application/json", **headers)
    parsed = json.loads(response.content) if response.content else {}
    return response.status_code, parsed


def refusal_codes(status: int, body: dict, field: str) -> list[str]:
    """The codes of a refusal. A value that does not coerce to its GraphQL type is refused
    by GraphQL itself (HTTP 400, a message naming the variable and why): INVALID here."""
    codes = [
        error.get("extensions", {}).get("code") or ("INVALID" if error.get("message") else None)
        for error in body.get("errors") or []
    ]
    payload = (body.get("data") or {}).get(field) or {}
    codes += [error["code"] for error in payload.get("errors") or []]
    return codes


@pytest.mark.parametrize("case", sorted(REFUSED_TEXT))
def test_refused_text_in_every_string_input_is_a_clear_error_and_writes_nothing(
    client, world, case
):
    checked = 0
    for field, (document, token, valid, _) in operations(world).items():
        for path in string_fields(valid):
            before = everything()
            body = json.dumps(
                {
                    "query": document,
                    "variables": {"input": with_value(valid, path, REFUSED_TEXT[case])},
                }
            )
            status, parsed = send(client, body, token)

            where = f"{field}.{'.'.join(map(str, path))}={case}"
            assert status in (200, 400), where
            assert "INTERNAL_ERROR" not in json.dumps(parsed), where
            codes = refusal_codes(status, parsed, field)
            # memberLogin answers every failed log-in alike (no hint whether the email exists).
            allowed = {"INVALID", "NOT_FOUND", "LIMIT_EXCEEDED"}
            if field == "memberLogin":
                allowed.add("PERMISSION_DENIED")
            assert codes and set(codes) <= allowed, (
                where,
                parsed,
            )
            assert everything() == before, where
            checked += 1
    assert checked > 30
    assert ledger_check().ok


@pytest.mark.parametrize("case", sorted(ODD_TEXT))
def test_legal_but_odd_text_is_kept_as_sent_or_refused_clearly(client, world, case):
    for field, (document, token, valid, _) in operations(world).items():
        for path in string_fields(valid):
            value = ODD_TEXT[case]
            input_ = with_value(valid, path, value)
            if path[-1] == "idempotencyKey":
                input_ = with_value(input_, path, f"{value}-{field}")
            body = json.dumps({"query": document, "variables": {"input": input_}})
            status, parsed = send(client, body, token)

            where = f"{field}.{'.'.join(map(str, path))}={case}"
            assert status in (200, 400), where
            assert "INTERNAL_ERROR" not in json.dumps(parsed), where
    assert ledger_check().ok
    # A reference in right-to-left script comes back as it was sent.
    from coalition.models import LedgerTransaction

    for reference in LedgerTransaction.objects.values_list("reference", flat=True):
        assert "\x00" not in reference


def test_text_inside_the_document_is_checked_too(client, world):
    before = everything()
    number = world.member.member_number
    document = (
        f'mutation {{ recordPurchase(input: {{memberNumber: "{number}", amount: "1.00", '
        'currency: "USD", reference: "a\\u0000b", idempotencyKey: "lit"}) { errors { code } } }'
    )
    status, parsed = send(client, json.dumps({"query": document}), world.key)

    assert status == 400 and "NUL" in parsed["errors"][0]["message"]
    assert everything() == before


@pytest.mark.parametrize(
    "body, status",
    [
        ('{"query": "{ partners { code } }"', 400),  # truncated
        ("{'query': 1}", 400),  # not JSON
        ("[]", 400),  # batching
        ('"just a string"', 400),
        ('{"query": 12}', 400),
        ('{"query": "{ partners { code } }", "variables": [1]}', 400),
        (b"\xff\xfe\x00garbage", 400),  # not UTF-8
        ('{"query": "' + "{" * 5000 + '"}', 400),  # unbalanced, deep
    ],
)
def test_malformed_bodies_are_refused_clearly(client, world, body, status):
    before = everything()
    response = client.post("/graphql/", body, content_type="application/json")

    assert response.status_code == status
    parsed = json.loads(response.content)
    assert parsed["errors"][0]["message"] and "INTERNAL_ERROR" not in response.content.decode()
    assert everything() == before


def test_a_huge_body_is_refused_before_it_is_read(client, world):
    before = everything()
    huge = json.dumps({"query": "{ partners { code } }", "variables": {"x": "y" * 2_000_000}})

    response = client.post("/graphql/", huge, content_type="application/json")

    assert response.status_code == 413
    assert json.loads(response.content)["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"
    assert everything() == before


@pytest.mark.parametrize("depth", [50, 2000])
def test_deeply_nested_queries_are_refused(client, world, depth):
    nested = "id"
    for _ in range(depth):
        nested = f"reversalOf {{ {nested} }}"
    query = f"{{ me {{ transactions {{ edges {{ node {{ {nested} }} }} }} }} }}"

    status, parsed = send(client, json.dumps({"query": query}), world.member_token)

    assert status == 400
    error = parsed["errors"][0]
    # Too deep for the depth limit, or too many tokens to even parse: both before execution.
    assert (
        error.get("extensions", {}).get("code") == "LIMIT_EXCEEDED" or "nested" in error["message"]
    )


@pytest.mark.parametrize(
    "field, value",
    [
        ("points", 2**63),
        ("points", 2**70),
        ("points", -(2**64)),
        ("points", 2**31),
        ("points", 1.5),
        ("points", "5"),
        ("points", 1e308),
    ],
)
def test_numbers_beyond_the_schema_are_refused(client, world, field, value):
    before = everything()
    document, token, valid, _ = operations(world)["redeemPoints"]
    body = json.dumps({"query": document, "variables": {"input": {**valid, field: value}}})

    status, parsed = send(client, body, token)

    assert status == 400, parsed
    assert parsed["errors"][0]["message"]
    assert everything() == before


@pytest.mark.parametrize(
    "amount",
    [
        "10.123456789",  # too many places for money
        "1" + "0" * 30,  # beyond any sum
        "1e400",
        "-10.00",
        "NaN",
        "Infinity",
        "0x10",
        "10,00",
        str(2**64),
    ],
)
def test_amounts_that_are_not_money_are_refused(client, world, amount):
    before = everything()
    document, token, valid, _ = operations(world)["recordPurchase"]
    input_ = {**valid, "amount": amount, "lineItems": None}
    status, parsed = send(
        client, json.dumps({"query": document, "variables": {"input": input_}}), token
    )

    codes = refusal_codes(status, parsed, "recordPurchase")
    assert status in (200, 400) and codes, parsed
    assert set(codes) <= {"INVALID", "LIMIT_EXCEEDED"}, parsed
    assert everything() == before


def test_a_json_number_with_a_fraction_is_refused_for_a_decimal(client, world):
    before = everything()
    document, token, valid, _ = operations(world)["recordPurchase"]
    input_ = {**valid, "amount": 10.1, "lineItems": None}

    status, parsed = send(
        client, json.dumps({"query": document, "variables": {"input": input_}}), token
    )

    assert status == 400 and parsed["errors"]
    assert everything() == before


def test_api_uses_ordinary_strings_after_all_this(client, world):
    """The hostile requests above leave the service working: a normal purchase succeeds."""
    api = Api(client)
    document, token, valid, _ = operations(world)["recordPurchase"]
    payload = api.mutate("recordPurchase", document, {**valid, "idempotencyKey": "ok"}, token=token)
    assert payload["errors"] == []

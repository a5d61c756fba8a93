"""Abuse: depth, cost, aliases, mutation size, batching, body size, rate limits,
introspection, GraphiQL, GET, request ids and unexpected errors."""

import json
import logging

import pytest
from django.test import override_settings

from tests.api.conftest import everything, token_for

LIMITS = {"MAX_COST": 500, "MAX_DEPTH": 10, "MAX_ALIASES": 30, "MAX_MUTATION_FIELDS": 10}


def post(client, body, **headers):
    response = client.post("/graphql/", body, content_type="application/json", **headers)
    return response, json.loads(response.content)


@pytest.mark.django_db
def test_depth_is_limited(api, shopper):
    nested = "id"
    for _ in range(10):
        nested = f"reversalOf {{ {nested} }}"
    query = f"{{ me {{ transactions {{ edges {{ node {{ {nested} }} }} }} }} }}"

    response = api(query, token=token_for(shopper))

    assert response.status == 400
    assert response.codes == ["LIMIT_EXCEEDED"]
    assert "nested" in response.errors[0]["message"]


@pytest.mark.django_db
@override_settings(API_LIMITS=LIMITS)
def test_cost_counts_page_sizes_including_variables(api, shopper):
    query = """query($n: Int) { me { transactions(first: $n) {
        edges { node { id kind points createdAt partner { code } } } } } }"""
    token = token_for(shopper)

    assert api(query, {"n": 10}, token=token).status == 200
    refused = api(query, {"n": 100}, token=token)

    assert refused.status == 400
    assert refused.codes == ["LIMIT_EXCEEDED"]
    assert "cost" in refused.errors[0]["message"]


@pytest.mark.django_db
def test_aliases_are_limited(api):
    query = "{ " + " ".join(f"a{i}: partners {{ code }}" for i in range(31)) + " }"

    response = api(query)

    assert response.status == 400
    assert "aliases" in response.errors[0]["message"]


@pytest.mark.django_db
def test_a_hundred_aliased_redemptions_are_refused_whole(api, brand, shopper):
    fields = " ".join(
        f'r{i}: redeemPoints(input: {{memberNumber: "{shopper.member_number}", points: 1, '
        f'reference: "r", idempotencyKey: "k{i}"}}) {{ errors {{ code }} }}'
        for i in range(100)
    )
    before = everything()

    response = api(f"mutation {{ {fields} }}", token=brand.key)

    assert response.status == 400
    assert "LIMIT_EXCEEDED" in response.codes
    assert any("mutation has 100 fields" in e["message"] for e in response.errors)
    assert everything() == before


@pytest.mark.django_db
def test_eleven_mutation_fields_through_fragments_are_refused(api, brand, shopper):
    fields = " ".join(
        f'r{i}: redeemPoints(input: {{memberNumber: "{shopper.member_number}", points: 1, '
        f'reference: "r", idempotencyKey: "k{i}"}}) {{ errors {{ code }} }}'
        for i in range(11)
    )
    before = everything()

    response = api(f"mutation {{ ...F }} fragment F on Mutation {{ {fields} }}", token=brand.key)

    assert response.status == 400
    assert response.codes == ["LIMIT_EXCEEDED"]
    assert everything() == before


@pytest.mark.django_db
def test_ten_mutation_fields_are_fine(api, brand, shopper):
    fields = " ".join(
        f'r{i}: redeemPoints(input: {{memberNumber: "{shopper.member_number}", points: 1, '
        f'reference: "r", idempotencyKey: "k{i}"}}) {{ member {{ balance }} errors {{ code }} }}'
        for i in range(10)
    )

    response = api(f"mutation {{ {fields} }}", token=brand.key)

    assert response.status == 200
    # Each field saw the balance after its own write (no stale data between fields).
    assert [response.data[f"r{i}"]["member"]["balance"] for i in range(10)] == list(
        range(999, 989, -1)
    )


@pytest.mark.django_db
def test_a_fragment_bomb_is_refused_quickly(api):
    fragments = ["fragment F0 on Partner { code name }"]
    for i in range(1, 25):
        fragments.append(f"fragment F{i} on Partner {{ ...F{i - 1} ...F{i - 1} }}")
    query = "{ partners { ...F24 } } " + " ".join(fragments)

    response = api(query)

    assert response.status == 400
    assert response.codes == ["LIMIT_EXCEEDED"]


@pytest.mark.django_db
def test_too_many_tokens_are_refused(api):
    query = "{ " + "partners { code } " * 4000 + "}"

    response = api(query)

    assert response.status == 400
    assert "tokens" in response.errors[0]["message"]


@pytest.mark.django_db
def test_batching_is_off(client):
    response, body = post(client, json.dumps([{"query": "{ partners { code } }"}] * 2))

    assert response.status_code == 400
    assert "Batched requests are not supported" in body["errors"][0]["message"]


@pytest.mark.django_db
def test_a_body_over_one_megabyte_is_413(client):
    body = json.dumps({"query": "{ partners { code } }", "variables": {"pad": "x" * 1_100_000}})

    response, payload = post(client, body)

    assert response.status_code == 413
    assert payload["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("{not json", 400),
        ('"a string"', 400),
        ('{"query": 5}', 400),
        ('{"query": "{ partners { code } }", "variables": [1]}', 400),
        ('{"query": "{ partners { code "}', 400),
        ('{"query": "{ nosuchfield }"}', 400),
        ('{"query": "query A { partners { code } } query B { partners { name } }"}', 400),
    ],
)
def test_malformed_requests_are_400(client, body, status):
    response, payload = post(client, body)

    assert response.status_code == status
    assert payload["errors"]


@override_settings(RATE_LIMITS={"default": "1000/m", "partners": "2/m", "redeemPoints": "1/m"})
@pytest.mark.django_db
def test_rate_limits_count_per_credential_and_operation(api, brand, other_brand, shopper):
    assert api("{ partners { code } }", token=brand.key).status == 200
    assert api("{ partners { code } }", token=brand.key).status == 200
    limited = api("{ partners { code } }", token=brand.key)
    assert limited.status == 429
    assert limited.codes == ["LIMIT_EXCEEDED"]
    assert int(limited.headers["Retry-After"]) >= 1
    assert api("{ partners { code } }", token=other_brand.key).status == 200
    assert api("{ partners { code } }").status == 200  # anonymous counts by address

    redeem = """mutation($input: RedeemPointsInput!) { redeemPoints(input: $input) {
        errors { code message } } }"""
    values = {"memberNumber": shopper.member_number, "points": 5, "reference": "r"}
    first = api.mutate("redeemPoints", redeem, {**values, "idempotencyKey": "a"}, token=brand.key)
    assert first["errors"] == []
    before = everything()
    second = api.mutate("redeemPoints", redeem, {**values, "idempotencyKey": "b"}, token=brand.key)
    assert [e["code"] for e in second["errors"]] == ["LIMIT_EXCEEDED"]
    assert everything() == before


@pytest.mark.django_db
def test_introspection_is_off_unless_enabled(api, settings):
    assert api("{ __schema { types { name } } }").status == 400
    assert api("{ __typename }").data == {"__typename": "Query"}

    settings.GRAPHQL_INTROSPECTION = True
    assert api("{ __schema { queryType { name } } }").data == {
        "__schema": {"queryType": {"name": "Query"}}
    }


@pytest.mark.django_db
def test_graphiql_only_when_enabled(client, settings):
    closed = client.get("/graphql/", HTTP_ACCEPT="text/html")
    settings.GRAPHIQL = True
    opened = client.get("/graphql/", HTTP_ACCEPT="text/html")

    assert closed.status_code == 400 and closed["Content-Type"] == "application/json"
    assert opened.status_code == 200 and b"graphiql" in opened.content.lower()


@pytest.mark.django_db
def test_queries_over_get_but_not_mutations(client, brand):
    ok = client.get("/graphql/", {"query": "{ partners { code } }"})
    refused = client.get(
        "/graphql/",
        {"query": 'mutation { memberLogin(input: {email: "a", password: "b"}) { token } }'},
    )

    assert ok.status_code == 200 and ok.json()["data"]["partners"]
    assert refused.status_code == 405


@pytest.mark.django_db
def test_other_methods_are_405(client):
    assert client.put("/graphql/", "{}", content_type="application/json").status_code == 405


@pytest.mark.django_db
def test_every_response_has_a_request_id(client):
    fresh = client.post("/graphql/", '{"query": "{ partners { code } }"}', "application/json")
    echoed = client.post(
        "/graphql/",
        '{"query": "{ partners { code } }"}',
        "application/json",
        HTTP_X_REQUEST_ID="edge-1234",
    )
    unsafe = client.post("/graphql/", "[]", "application/json", HTTP_X_REQUEST_ID="a b\nc")

    assert len(fresh["X-Request-ID"]) == 32
    assert echoed["X-Request-ID"] == "edge-1234"
    assert unsafe["X-Request-ID"] != "a b\nc" and len(unsafe["X-Request-ID"]) == 32


@pytest.mark.django_db
def test_an_unexpected_error_is_logged_with_the_request_id_and_hidden(
    api, shopper, monkeypatch, caplog
):
    def explode(**kwargs):
        raise RuntimeError("secret database detail")

    monkeypatch.setattr("coalition.selectors.member_lifetime_earned", explode)

    with caplog.at_level(logging.ERROR, logger="api"):
        response = api("{ me { lifetimeEarned } }", token=token_for(shopper))

    request_id = response.headers["X-Request-ID"]
    assert response.status == 200
    assert response.errors == [
        {
            "message": "Internal server error",
            "extensions": {"code": "INTERNAL_ERROR", "requestId": request_id},
            "locations": [{"line": 1, "column": 8}],
            "path": ["me", "lifetimeEarned"],
        }
    ]
    assert "secret" not in json.dumps(response.body)
    assert request_id in caplog.text and "secret database detail" in caplog.text


@pytest.mark.django_db
def test_a_failure_outside_execution_is_a_json_500(client, monkeypatch, caplog):
    def explode(request):
        raise RuntimeError("credential store down")

    monkeypatch.setattr("api.core.auth.principal_resolve", explode)

    with caplog.at_level(logging.ERROR, logger="api"):
        response = client.post(
            "/graphql/", '{"query": "{ partners { code } }"}', "application/json"
        )

    assert response.status_code == 500
    assert response.json()["errors"][0]["extensions"] == {
        "code": "INTERNAL_ERROR",
        "requestId": response["X-Request-ID"],
    }
    assert "credential store down" not in response.content.decode()
    assert response["X-Request-ID"] in caplog.text

"""registerWebhookEndpoint: a partner registers a URL for its events; the signing secret is
shown in this answer only."""

import pytest

from partners.models import WebhookEndpoint
from tests.api.conftest import CALLERS, everything, gid

REGISTER = """
mutation Register($input: RegisterWebhookEndpointInput!) {
  registerWebhookEndpoint(input: $input) {
    endpoint { id url active createdAt }
    secret
    errors { field code message }
  }
}"""


def codes(payload):
    return [(error["code"], error["field"]) for error in payload["errors"]]


@pytest.mark.django_db
def test_a_partner_registers_an_endpoint(api, brand, receiver):
    payload = api.mutate(
        "registerWebhookEndpoint",
        REGISTER,
        {"url": receiver.url, "idempotencyKey": "w1"},
        token=brand.key,
    )

    endpoint = WebhookEndpoint.objects.get()
    assert payload["errors"] == []
    assert payload["endpoint"]["id"] == gid("WebhookEndpoint", endpoint.pk)
    assert payload["endpoint"]["url"] == receiver.url
    assert payload["endpoint"]["active"] is True
    assert payload["secret"] == endpoint.secret and endpoint.secret.startswith("whsec_")


@pytest.mark.django_db
def test_a_retry_returns_the_same_endpoint_and_secret(api, brand, receiver):
    values = {"url": receiver.url, "idempotencyKey": "w1"}
    first = api.mutate("registerWebhookEndpoint", REGISTER, values, token=brand.key)
    before = everything()

    again = api.mutate("registerWebhookEndpoint", REGISTER, values, token=brand.key)

    assert again == first
    assert everything() == before


@pytest.mark.django_db
def test_the_same_key_for_another_url_is_a_conflict(api, brand, receiver):
    api.mutate(
        "registerWebhookEndpoint",
        REGISTER,
        {"url": receiver.url, "idempotencyKey": "w1"},
        token=brand.key,
    )
    before = everything()

    payload = api.mutate(
        "registerWebhookEndpoint",
        REGISTER,
        {"url": receiver.url + "/2", "idempotencyKey": "w1"},
        token=brand.key,
    )

    assert codes(payload) == [("IDEMPOTENCY_CONFLICT", "input.idempotencyKey")]
    assert everything() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "ftp://example.com/hooks",
        "http://example.com/hooks",  # plain http is refused unless enabled
        "https://127.0.0.1/hooks",  # private and loopback addresses are refused
        "https://10.1.2.3/hooks",
        "https://user:pass@example.com/hooks",
        "https://example.com/" + "x" * 500,
    ],
)
def test_unsafe_or_invalid_urls_are_refused(api, brand, url):
    before = everything()

    payload = api.mutate(
        "registerWebhookEndpoint", REGISTER, {"url": url, "idempotencyKey": "w1"}, token=brand.key
    )

    assert codes(payload) == [("INVALID", "input.url")]
    assert everything() == before


@pytest.mark.django_db
def test_at_most_ten_endpoints(api, brand, receiver):
    for i in range(10):
        api.mutate(
            "registerWebhookEndpoint",
            REGISTER,
            {"url": f"{receiver.url}/{i}", "idempotencyKey": f"w{i}"},
            token=brand.key,
        )

    payload = api.mutate(
        "registerWebhookEndpoint",
        REGISTER,
        {"url": receiver.url, "idempotencyKey": "w10"},
        token=brand.key,
    )

    assert codes(payload) == [("INVALID", "input.url")]


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_permission_matrix(api, callers, caller, receiver):
    before = everything()

    payload = api.mutate(
        "registerWebhookEndpoint",
        REGISTER,
        {"url": receiver.url, "idempotencyKey": "w1"},
        token=callers[caller],
    )

    if caller in ("partner", "other_partner"):
        assert payload["errors"] == []
    else:
        assert codes(payload) == [("PERMISSION_DENIED", None)]
        assert payload["secret"] is None
        assert everything() == before


@pytest.mark.django_db
def test_only_its_partner_sees_an_endpoint(api, callers, brand, receiver):
    registered = api.mutate(
        "registerWebhookEndpoint",
        REGISTER,
        {"url": receiver.url, "idempotencyKey": "w1"},
        token=brand.key,
    )
    query = "query($id: ID!) { node(id: $id) { ... on WebhookEndpoint { url } } }"

    for caller, token in callers.items():
        node = api(query, {"id": registered["endpoint"]["id"]}, token=token).data["node"]
        assert node == ({"url": receiver.url} if caller == "partner" else None), caller

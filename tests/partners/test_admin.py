"""The operator admin for partners: pages load, writes go through the services, the API key
secret is shown exactly once, keys are revoked by an action, terms keep their history, and
bad promotion windows are explained on the form."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse
from django.utils import timezone

from coalition.models import Tier
from partners import selectors
from partners.models import ApiKey, CommercialTerms, Partner, Promotion
from partners.services import terms_set
from tests import factories

SECRET = re.compile(r'id="api-key-secret"[^>]*>(ck_live_[A-Za-z0-9_-]+)<')


@pytest.fixture
def operator(client, django_user_model):
    """A browser logged in to the admin as a superuser."""
    user = django_user_model.objects.create_superuser(
        username="operator", email="ops@example.com", password="x-Str0ng-pass"
    )
    client.force_login(user)
    return client


@pytest.fixture
def brand(db):
    partner, _key = factories.onboarded_partner(code="GROCER", name="Corner Grocer")
    return partner


def url(name, *args):
    return reverse(f"admin:{name}", args=args)


def split_datetime(prefix, moment):
    return {f"{prefix}_0": f"{moment:%Y-%m-%d}", f"{prefix}_1": f"{moment:%H:%M:%S}"}


# --------------------------------------------------------------------------- pages load


@pytest.mark.parametrize(
    "model",
    [
        "partners_partner",
        "partners_store",
        "partners_commercialterms",
        "partners_apikey",
        "partners_promotion",
        "partners_promotionaward",
        "partners_reward",
        "partners_rewardredemption",
        "partners_partneridentity",
        "coalition_tier",
        "coalition_membertier",
        "coalition_tierchange",
    ],
)
def test_changelists_load(operator, brand, model):
    response = operator.get(url(f"{model}_changelist"))
    assert response.status_code == 200


@pytest.mark.parametrize(
    "model",
    [
        "partners_partner",
        "partners_store",
        "partners_commercialterms",
        "partners_apikey",
        "partners_promotion",
        "partners_reward",
        "partners_partneridentity",
        "coalition_tier",
    ],
)
def test_add_pages_load(operator, model):
    assert operator.get(url(f"{model}_add")).status_code == 200


def test_ledger_side_records_cannot_be_added_by_hand(operator):
    for model in ("partners_promotionaward", "partners_rewardredemption", "coalition_tierchange"):
        assert operator.get(url(f"{model}_add")).status_code == 403


def test_partner_page_shows_its_terms_history_stores_and_keys(operator, brand, member):
    # Given a partner with a store, new terms from tomorrow, and a changelist entry
    factories.earn(member, brand, 10)
    brand.stores.create(code="NYC-5TH", name="Fifth Avenue")
    tomorrow = timezone.now() + timedelta(days=1)
    terms_set(
        partner=brand, issuance_price="0.0120", redemption_price="0.0090", valid_from=tomorrow
    )

    # When the operator opens the partner list and the partner's page
    listing = operator.get(url("partners_partner_changelist"))
    page = operator.get(url("partners_partner_change", brand.pk))

    # Then the list shows it with the prices in force, and the page every terms row ever set
    assert listing.status_code == page.status_code == 200
    assert "GROCER" in listing.text and "0.010000" in listing.text
    assert "commercial terms history" in page.text.lower()
    for price in ("0.010000", "0.008000", "0.012000", "0.009000"):
        assert price in page.text
    assert "in force" in page.text and "scheduled" in page.text
    assert "NYC-5TH" in page.text
    assert ApiKey.objects.get(partner=brand).prefix in page.text
    # And the history is read-only: no way to edit or delete a terms row from there
    assert 'name="terms-0-issuance_price"' not in page.text
    assert 'name="terms-0-DELETE"' not in page.text


# --------------------------------------------------------------------------- API keys


def test_creating_a_key_shows_its_secret_once(operator, brand):
    # When the operator creates a read-only key for the partner
    response = operator.post(
        url("partners_apikey_add"), {"partner": brand.pk, "name": "reports", "scopes": ["read"]}
    )

    # Then the answer shows the secret, not to be cached
    assert response.status_code == 200
    raw_key = SECRET.search(response.text).group(1)
    assert "no-store" in response["Cache-Control"]
    assert "will not be shown again" in response.text
    # And the secret works, with the scopes asked for, and is stored only as a digest
    key = selectors.api_key_authenticate(raw_key=raw_key)
    assert (key.partner, key.name, key.scopes) == (brand, "reports", ["read"])
    assert not ApiKey.objects.filter(digest=raw_key).exists()
    assert not LogEntry.objects.filter(object_repr__contains=raw_key).exists()
    assert not LogEntry.objects.filter(change_message__contains=raw_key).exists()

    # When the operator looks at the key again, or at the partner or the list of keys
    pages = [
        operator.get(url("partners_apikey_change", key.pk)),
        operator.get(url("partners_apikey_changelist")),
        operator.get(url("partners_partner_change", brand.pk)),
    ]

    # Then the secret is nowhere (its recognisable prefix is)
    for page in pages:
        assert page.status_code == 200
        assert raw_key not in page.text
    assert key.prefix in pages[0].text


def test_revoke_action(operator, brand):
    # Given the partner's working key
    _other, raw_key = factories.onboarded_partner()
    key = ApiKey.objects.get(partner=brand)

    # When the operator revokes it from the list
    response = operator.post(
        url("partners_apikey_changelist"),
        {"action": "revoke", "_selected_action": [key.pk]},
        follow=True,
    )

    # Then it is revoked and refused from the next request, and other keys still work
    assert "Revoked 1 key(s)." in response.text
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert selectors.api_key_authenticate(raw_key=raw_key) is not None
    assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 1


def test_keys_can_be_neither_edited_nor_deleted(operator, brand):
    key = ApiKey.objects.get(partner=brand)

    edit = operator.post(url("partners_apikey_change", key.pk), {"name": "renamed"})
    delete = operator.post(url("partners_apikey_delete", key.pk), {"post": "yes"})

    assert edit.status_code == delete.status_code == 403
    assert ApiKey.objects.get(pk=key.pk).name == "default"


# --------------------------------------------------------------------------- partners


def onboarding_form(**overrides):
    form = {
        "code": "BAKERY",
        "name": "Village Bakery",
        "currency": "EUR",
        "earn_rate": "2",
        "stripe_account_id": "",
        "stripe_customer_id": "",
        "contact_email": "",
        "issuance_price": "0.0100",
        "redemption_price": "0.0080",
    }
    return {**form, **overrides}


def test_onboarding_a_partner_creates_its_terms_and_shows_its_key_once(operator, db):
    response = operator.post(url("partners_partner_add"), onboarding_form())

    assert response.status_code == 200
    raw_key = SECRET.search(response.text).group(1)
    partner = Partner.objects.get(code="BAKERY")
    assert selectors.api_key_authenticate(raw_key=raw_key).partner == partner
    assert partner.terms.get().issuance_price == Decimal("0.01")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"redemption_price": "0.0200"}, "The redemption price is above the issuance price"),
        ({"code": "GROCER"}, "A partner with code GROCER already exists"),
        ({"currency": "XYZ"}, "Unknown currency"),
        ({"stripe_account_id": "nope"}, "Must look like acct_"),
    ],
)
def test_onboarding_refusals_are_shown_on_the_form_and_create_nothing(
    operator, brand, overrides, message
):
    before = factories.partner_state()

    response = operator.post(url("partners_partner_add"), onboarding_form(**overrides))

    assert response.status_code == 200
    assert message in response.text
    assert "errornote" in response.text
    assert "already exists." not in response.text  # the service's message only, not twice
    assert factories.partner_state() == before


def test_suspending_a_partner_goes_through_the_status_service(operator, brand):
    response = operator.post(
        url("partners_partner_changelist"),
        {"action": "suspend", "_selected_action": [brand.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert Partner.objects.get(pk=brand.pk).status == Partner.Status.SUSPENDED


# --------------------------------------------------------------------------- terms


def terms_form(partner, **overrides):
    return {
        "partner": partner.pk,
        "valid_from_0": "",
        "valid_from_1": "",
        "issuance_price": "0.0150",
        "redemption_price": "0.0100",
        **overrides,
    }


def test_new_terms_from_the_admin_go_through_terms_set(operator, brand):
    start = timezone.now() + timedelta(days=2)

    response = operator.post(
        url("partners_commercialterms_add"),
        terms_form(brand, **split_datetime("valid_from", start)),
    )

    assert response.status_code == 302
    latest = brand.terms.order_by("-valid_from").first()
    assert latest.issuance_price == Decimal("0.015")
    assert latest.valid_from == start.replace(microsecond=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"redemption_price": "0.0200"}, "the operator must allow it explicitly"),
        ("yesterday", "New terms cannot start in the past"),
    ],
)
def test_terms_refusals_are_shown_on_the_form(operator, brand, overrides, message):
    if overrides == "yesterday":
        overrides = split_datetime("valid_from", timezone.now() - timedelta(days=1))
    count = CommercialTerms.objects.count()

    response = operator.post(url("partners_commercialterms_add"), terms_form(brand, **overrides))

    assert response.status_code == 200
    assert message in response.text
    assert CommercialTerms.objects.count() == count


def test_allowed_redemption_above_issuance_is_saved_with_a_warning(operator, brand):
    response = operator.post(
        url("partners_commercialterms_add"),
        terms_form(brand, redemption_price="0.0200", allow_redemption_above_issuance="on"),
        follow=True,
    )

    assert response.status_code == 200
    assert "will be reimbursed 0.0200 per redeemed point but pays only 0.0150" in response.text
    assert "⚠ redemption above issuance" in response.text
    assert brand.terms.filter(redemption_price=Decimal("0.02")).exists()


def test_terms_can_be_neither_edited_nor_deleted(operator, brand):
    terms = brand.terms.get()

    edit = operator.post(url("partners_commercialterms_change", terms.pk), terms_form(brand))
    delete = operator.post(url("partners_commercialterms_delete", terms.pk), {"post": "yes"})

    assert edit.status_code == delete.status_code == 403
    assert CommercialTerms.objects.get(pk=terms.pk).issuance_price == Decimal("0.01")


# --------------------------------------------------------------------------- promotions


def promotion_form(partner, starts_at, ends_at, **overrides):
    return {
        "name": "Double points",
        "partner": partner.pk,
        "kind": "multiplier",
        **split_datetime("starts_at", starts_at),
        **split_datetime("ends_at", ends_at),
        "multiplier": "2",
        "bonus_points": "0",
        "min_spend": "",
        "categories": "[]",
        "skus": "[]",
        "per_member_limit": "",
        "budget_points": "",
        "active": "on",
        **overrides,
    }


def test_promotion_with_a_reversed_window_shows_a_clear_error(operator, brand):
    now = timezone.now()

    response = operator.post(
        url("partners_promotion_add"), promotion_form(brand, now, now - timedelta(days=1))
    )

    assert response.status_code == 200
    assert "The promotion must end after it starts." in response.text
    assert "promotion_window_forward" not in response.text
    assert not Promotion.objects.exists()


def test_promotion_is_saved_from_the_admin(operator, brand):
    now = timezone.now()
    gold = Tier.objects.create(code="gold", name="Gold", qualifying_points=5000)

    response = operator.post(
        url("partners_promotion_add"),
        promotion_form(
            brand,
            now,
            now + timedelta(days=7),
            tiers=[gold.pk],
            categories='["dairy"]',
            budget_points="1000",
        ),
    )

    assert response.status_code == 302
    promotion = Promotion.objects.get()
    assert (promotion.multiplier, promotion.categories, promotion.budget_points) == (
        Decimal("2"),
        ["dairy"],
        1000,
    )
    assert list(promotion.tiers.all()) == [gold]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"multiplier": "1"}, "A multiplier promotion needs a multiplier above 1."),
        ({"kind": "fixed_bonus", "bonus_points": "0"}, "A bonus promotion needs bonus points"),
        ({"categories": '"dairy"'}, "Enter a JSON list of categories"),
    ],
)
def test_promotion_form_refuses_rules_that_would_do_nothing(operator, brand, overrides, message):
    now = timezone.now()

    response = operator.post(
        url("partners_promotion_add"),
        promotion_form(brand, now, now + timedelta(days=1), **overrides),
    )

    assert response.status_code == 200
    assert message in response.text
    assert not Promotion.objects.exists()


def test_editing_a_promotion_keeps_the_budget_counter_purchases_moved(operator, brand, member):
    # Given a budgeted promotion that purchases have drawn on
    now = timezone.now()
    promotion = factories.promotion(
        partner=brand, kind=Promotion.Kind.FIXED_BONUS, bonus_points=30, budget_points=100
    )
    factories.purchase(brand, member, "10.00")
    assert Promotion.objects.get(pk=promotion.pk).awarded_points == 30

    # When the operator renames it, and then tries to lower the budget below what was given
    renamed = operator.post(
        url("partners_promotion_change", promotion.pk),
        promotion_form(
            brand,
            now - timedelta(days=1),
            now + timedelta(days=30),
            name="Renamed",
            kind="fixed_bonus",
            bonus_points="30",
            multiplier="1",
            budget_points="100",
        ),
    )
    lowered = operator.post(
        url("partners_promotion_change", promotion.pk),
        promotion_form(
            brand,
            now - timedelta(days=1),
            now + timedelta(days=30),
            kind="fixed_bonus",
            bonus_points="30",
            multiplier="1",
            budget_points="20",
        ),
    )

    # Then the counter is what purchases made it, and the budget can't go below it
    assert renamed.status_code == 302
    assert "30 points were already awarded" in lowered.text
    promotion.refresh_from_db()
    assert (promotion.name, promotion.awarded_points, promotion.budget_points) == (
        "Renamed",
        30,
        100,
    )


# --------------------------------------------------------------------------- tiers


def test_tier_admin_adds_tiers_and_member_tiers_are_read_only(operator, member, brand):
    response = operator.post(
        url("coalition_tier_add"),
        {"code": "silver", "name": "Silver", "qualifying_points": "1000", "earn_multiplier": "1.5"},
    )
    Tier.objects.create(code="base", name="Base", qualifying_points=0)
    factories.earn(member, brand, 1200)

    assert response.status_code == 302
    listing = operator.get(url("coalition_tier_changelist"))
    assert "Silver" in listing.text
    state = member.tier_state
    assert state.tier.code == "silver"
    assert operator.get(url("coalition_membertier_change", state.pk)).status_code == 200
    assert operator.post(url("coalition_membertier_change", state.pk), {}).status_code == 403

"""Charities: onboarding by command and admin, verification recorded, listing, suspension."""

import base64
from io import StringIO

import pytest
from django.core.management import call_command, load_command_class
from django.test import Client

from charity import selectors, services
from charity.models import Cause, Charity, CharityStatusChange
from coalition.errors import ErrorCode
from tests import factories

pytestmark = pytest.mark.django_db


# --------------------------------------------------------------------------- create_charity


def _run_command(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run the command as `manage.py` does (exit code, stdout, stderr), in-process."""
    # run_from_argv closes the connections at the end; the test's transaction must survive.
    monkeypatch.setattr("django.db.connections.close_all", lambda: None)
    command = load_command_class("charity", "create_charity")
    try:
        command.run_from_argv(["manage.py", "create_charity", *args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_create_charity_prints_the_global_id_of_a_verified_charity(monkeypatch, capsys):
    code, out, err = _run_command(
        monkeypatch,
        capsys,
        "--name",
        "Clean Rivers",
        "--registration-number",
        "501-c3-7788",
        "--cause",
        "Environment",
        "--stripe-account",
        "acct_1Rivers",
    )

    assert code == 0, err
    charity = Charity.objects.get()
    last_line = out.strip().splitlines()[-1]
    assert base64.b64decode(last_line).decode() == f"Charity:{charity.pk}"
    assert charity.status == Charity.Status.VERIFIED
    assert (charity.cause, charity.stripe_account_id) == ("environment", "acct_1Rivers")
    change = CharityStatusChange.objects.get(charity=charity)
    assert (change.from_status, change.to_status) == ("", "verified")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--registration-number", "R1", "--cause", "health"], "--name is required"),
        (["--name", "X", "--registration-number", "R1", "--cause", "golf"], "--cause"),
        (
            [
                "--name",
                "X",
                "--registration-number",
                "R1",
                "--cause",
                "health",
                "--stripe-account",
                "x",
            ],
            "--stripe-account",
        ),
        (["--name", "X", "--registration-number", "DUP", "--cause", "health"], "already"),
        (["--name", "", "--registration-number", "R1", "--cause", "health"], "--name"),
    ],
)
def test_create_charity_refuses_bad_input_with_one_line_and_writes_nothing(
    monkeypatch, capsys, args, message
):
    factories.CharityFactory(registration_number="DUP", country="US")
    before = factories.charity_state()

    code, out, err = _run_command(monkeypatch, capsys, *args)

    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    assert out == ""
    assert factories.charity_state() == before


def test_create_charity_through_call_command():
    out = StringIO()
    call_command(
        "create_charity",
        "--name=Food Bank",
        "--registration-number=FB-1",
        "--cause=disaster relief",
        stdout=out,
    )
    assert Charity.objects.get().cause == "disaster-relief"


# --------------------------------------------------------------------------- status


def test_verification_suspension_and_reinstatement_are_recorded(staff_user):
    charity = services.charity_create(
        name="Books for All", registration_number="BFA-1", cause="education"
    )
    assert charity.status == Charity.Status.PENDING

    services.charity_set_status(charity=charity, status="verified", changed_by=staff_user)
    services.charity_set_status(
        charity=charity, status="suspended", changed_by=staff_user, reason="audit"
    )
    services.charity_set_status(charity=charity, status="verified", changed_by=staff_user)

    changes = list(
        CharityStatusChange.objects.filter(charity=charity)
        .order_by("id")
        .values_list("from_status", "to_status", "changed_by")
    )
    assert changes == [
        ("", "pending", None),
        ("pending", "verified", staff_user.pk),
        ("verified", "suspended", staff_user.pk),
        ("suspended", "verified", staff_user.pk),
    ]


def test_a_status_change_that_makes_no_sense_is_refused(charity, staff_user):
    factories.assert_charity_refused(
        ErrorCode.INVALID_STATE,
        lambda: services.charity_set_status(charity=charity, status="verified"),
    )
    factories.assert_charity_refused(
        ErrorCode.INVALID_STATE,
        lambda: services.charity_set_status(charity=charity, status="pending"),
    )


def test_a_suspended_charity_keeps_its_history_and_its_money_is_held(
    rich_member, charity, staff_user
):
    charity.stripe_account_id = "acct_1Held"
    charity.save()
    donation = factories.give(rich_member, charity, 300)
    assert selectors.charity_payable(charity)

    services.charity_set_status(charity=charity, status="suspended", changed_by=staff_user)

    charity.refresh_from_db()
    assert not selectors.charity_payable(charity)  # settlement holds its money
    assert selectors.charity_total_donated_points(charity=charity) == 300
    assert list(selectors.member_donations(member=rich_member)) == [donation]
    assert charity not in selectors.charities_listed()
    factories.assert_charity_refused(
        ErrorCode.INVALID_STATE, lambda: factories.give(rich_member, charity, 100)
    )


def test_charity_details_are_validated(db):
    for kwargs, field in [
        ({"country": "USA"}, "country"),
        ({"website": "not a url"}, "website"),
        ({"logo_url": "ftp://x.org/logo.png"}, "logoUrl"),
        ({"cause": "golf"}, "cause"),
        ({"name": " "}, "name"),
    ]:
        arguments = {"name": "Valid", "registration_number": "V-1", "cause": "arts", **kwargs}
        factories.assert_charity_refused(
            ErrorCode.INVALID, lambda a=arguments: services.charity_create(**a), field=field
        )


def test_the_registration_number_is_unique_per_country(db):
    services.charity_create(name="A", registration_number="123", cause="arts", country="US")
    services.charity_create(name="A (UK)", registration_number="123", cause="arts", country="GB")

    factories.assert_charity_refused(
        ErrorCode.INVALID,
        lambda: services.charity_create(name="B", registration_number="123", cause="arts"),
        field="registrationNumber",
    )


# --------------------------------------------------------------------------- listing


def test_listed_charities_are_the_verified_ones_filtered_with_totals(rich_member):
    health_us = factories.CharityFactory(name="A Health US", cause="health", country="US")
    health_gb = factories.CharityFactory(name="B Health GB", cause="health", country="GB")
    arts_us = factories.CharityFactory(name="C Arts US", cause="arts", country="US")
    factories.CharityFactory(name="D Pending", cause="health", status=Charity.Status.PENDING)
    factories.give(rich_member, health_us, 300)
    factories.give(rich_member, health_us, 200)

    listed = list(selectors.charities_listed())
    assert listed == [health_us, health_gb, arts_us]
    assert [c.total_donated_points for c in listed] == [500, 0, 0]
    assert list(selectors.charities_listed(cause="health")) == [health_us, health_gb]
    assert list(selectors.charities_listed(cause="Health", country="gb")) == [health_gb]
    assert list(selectors.charities_listed(cause="golf")) == []
    assert selectors.charity_total_donated_points(charity=health_us) == 500


def test_impact_totals_per_charity_and_cause(rich_member, partner):
    other = factories.member()
    factories.earn(other, partner, 1000)
    health = factories.CharityFactory(cause="health")
    arts = factories.CharityFactory(cause="arts")
    factories.give(rich_member, health, 300)
    factories.give(other, health, 100)
    factories.give(rich_member, arts, 200)

    by_charity = {row.key: row for row in selectors.charity_impact()}
    assert by_charity[str(health.pk)].donated_points == 400
    assert by_charity[str(health.pk)].donors == 2
    by_cause = {row.key: row for row in selectors.cause_impact()}
    assert (by_cause["health"].donated_points, by_cause["arts"].donated_points) == (400, 200)
    assert by_cause["health"].label == "Health"
    months = selectors.impact_over_time(cause="health")
    assert sum(month.donated_points for month in months) == 400


def test_causes_are_seeded_and_extendable(db):
    assert set(Cause.objects.values_list("code", flat=True)) >= {
        "environment",
        "education",
        "health",
        "hunger",
        "animals",
        "disaster-relief",
        "arts",
        "community",
    }
    Cause.objects.create(code="science", name="Science")

    charity = services.charity_create(name="Lab", registration_number="L-1", cause="science")
    assert charity.cause == "science"


# --------------------------------------------------------------------------- admin


@pytest.fixture
def admin_client(db):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("operator", password="x-Str0ng-pass")
    client = Client()
    client.force_login(user)
    return client, user


def test_admin_verification_is_recorded_with_who_and_when(admin_client):
    client, operator = admin_client
    pending = factories.CharityFactory(status=Charity.Status.PENDING)

    response = client.post(
        "/admin/charity/charity/",
        {"action": "make_verified", "_selected_action": [pending.pk]},
    )

    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.status == Charity.Status.VERIFIED
    change = CharityStatusChange.objects.get(charity=pending, to_status="verified")
    assert change.changed_by == operator
    assert change.from_status == "pending"
    assert change.created_at is not None


def test_admin_registers_a_charity_pending_with_its_first_status_recorded(admin_client):
    client, operator = admin_client

    response = client.post(
        "/admin/charity/charity/add/",
        {
            "name": "Paws",
            "registration_number": "PAWS-9",
            "country": "US",
            "cause": "animals",
            "description": "",
            "website": "https://paws.example.org",
            "logo_url": "",
            "stripe_account_id": "",
            "status_changes-TOTAL_FORMS": "0",
            "status_changes-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    charity = Charity.objects.get(name="Paws")
    assert charity.status == Charity.Status.PENDING
    assert CharityStatusChange.objects.get(charity=charity).changed_by == operator


def test_admin_pages_render(admin_client, rich_member, charity):
    client, _ = admin_client
    donation = factories.give(rich_member, charity, 100)

    for url in [
        "/admin/charity/charity/",
        f"/admin/charity/charity/{charity.pk}/change/",
        "/admin/charity/charity/impact/",
        "/admin/charity/donation/",
        f"/admin/charity/donation/{donation.pk}/change/",
        "/admin/charity/matchingcampaign/add/",
        "/admin/charity/cause/",
    ]:
        assert client.get(url).status_code == 200, url


def test_admin_refund_action(admin_client, rich_member, charity):
    client, operator = admin_client
    donation = factories.give(rich_member, charity, 100)

    response = client.post(
        "/admin/charity/donation/",
        {
            "action": "refund_donations",
            "_selected_action": [donation.pk],
            "apply": "1",
            "reason": "asked by phone",
        },
    )

    assert response.status_code == 302
    donation.refresh_from_db()
    assert donation.refunded_by == operator
    assert factories.wallet(rich_member).balance == 1000


def test_an_emptied_cause_table_gets_the_default_causes_back(db):
    Cause.objects.all().delete()

    charity = services.charity_create(name="Soup", registration_number="S-1", cause="hunger")

    assert charity.cause == "hunger"
    assert Cause.objects.count() == len(services.DEFAULT_CAUSES)

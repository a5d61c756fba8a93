"""Charity fixtures. The causes come from a data migration; a transactional test's flush
empties that table, so every charity test makes sure they are there."""

import pytest


@pytest.fixture(autouse=True)
def causes(request):
    uses_db = request.node.get_closest_marker("django_db") or {
        "db",
        "transactional_db",
    } & set(request.fixturenames)
    if not uses_db:
        return
    # `db` follows the test's own django_db marker (transactional or not).
    request.getfixturevalue("db")
    from charity.services import causes_seed

    causes_seed()


@pytest.fixture
def rich_member(member, partner):
    """A member holding 1,000 points earned at `partner`."""
    from tests import factories

    factories.earn(member, partner, 1000)
    return member


@pytest.fixture
def sponsor(db):
    from tests import factories

    return factories.PartnerFactory(name="Sponsor")

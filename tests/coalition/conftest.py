"""Fixtures shared by the ledger's tests."""

import pytest

from coalition.models import Programme


@pytest.fixture
def fixed_12_months(programme):
    """The programme's points live 12 months from their earn (the fixed policy)."""
    programme.expiry_policy = Programme.ExpiryPolicy.FIXED
    programme.expiry_months = 12
    programme.save()
    return programme

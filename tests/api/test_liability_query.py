"""liability: finance staff (view_finance) read the points outstanding and their cost."""

import pytest

from tests import factories
from tests.api.conftest import CALLERS

LIABILITY = """{ liability { outstandingPoints heldPoints costPerPoint asOf
  estimatedCost { amount currency } } }"""


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_only_finance_staff_read_the_liability(api, callers, caller, brand, shopper):
    factories.hold(shopper, brand.partner, 100)

    response = api(LIABILITY, token=callers[caller])

    if caller == "staff":
        liability = response.data["liability"]
        # Two members: the shopper's 1,000 and nothing for the other one.
        assert liability["outstandingPoints"] == 1000
        assert liability["heldPoints"] == 100
        # No redemptions yet: the active partners' average redemption price, 0.008.
        assert liability["estimatedCost"] == {"amount": "8.00", "currency": "USD"}
    else:
        assert response.data is None
        assert response.codes == ["PERMISSION_DENIED"]

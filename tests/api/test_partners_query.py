"""partners: the coalition's active brands, public."""

import pytest

from tests.api.conftest import CALLERS, gid

PARTNERS = "{ partners { id code name currency earnRate } }"


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_anyone_lists_the_active_partners(api, callers, caller, brand, other_brand):
    from partners.services import partner_set_status

    partner_set_status(partner=other_brand.partner, status="suspended")

    response = api(PARTNERS, token=callers[caller])

    assert response.errors == []
    assert response.data == {
        "partners": [
            {
                "id": gid("Partner", brand.partner.pk),
                "code": brand.partner.code,
                "name": brand.partner.name,
                "currency": "USD",
                "earnRate": "1.0000",
            }
        ]
    }

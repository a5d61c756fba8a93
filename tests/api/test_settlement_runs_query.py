"""settlementRuns: finance staff (view_finance) list runs, newest first; run nodes too."""

import pytest

from tests.api.conftest import CALLERS, CREATE_RUN, now_iso

RUNS = """{ settlementRuns(first: 5) { totalCount edges { node {
  id status periodEnd totalPaidOut { amount currency } lines { partner { code } } } } } }"""


@pytest.mark.django_db
@pytest.mark.parametrize("caller", CALLERS)
def test_only_finance_staff_list_runs(api, callers, caller, brand):
    created = api.mutate(
        "createSettlementRun", CREATE_RUN, {"periodEnd": now_iso()}, token=callers["staff"]
    )

    response = api(RUNS, token=callers[caller])
    node = api(
        "query($id: ID!) { node(id: $id) { id } }",
        {"id": created["run"]["id"]},
        token=callers[caller],
    )

    if caller == "staff":
        runs = response.data["settlementRuns"]
        assert runs["totalCount"] == 1
        assert runs["edges"][0]["node"]["id"] == created["run"]["id"]
        assert runs["edges"][0]["node"]["lines"] == [{"partner": {"code": brand.partner.code}}]
        assert node.data == {"node": {"id": created["run"]["id"]}}
    else:
        assert response.data is None
        assert response.codes == ["PERMISSION_DENIED"]
        assert node.data == {"node": None}

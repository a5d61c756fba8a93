"""The GraphQL schema: every app's queries and mutations joined (see CONVENTIONS.md).

Printed to schema.graphql at the repository root with
`python manage.py graphql_schema --schema api.schema.schema --out schema.graphql`; it must
honour ../shared/api/contract.graphql (tests/api/test_contract.py).
"""

import graphene

from .charity.mutations import CharityMutations
from .charity.queries import CharityQueries
from .charity.types import Charity, Donation
from .coalition.mutations import CoalitionMutations
from .coalition.queries import CoalitionQueries
from .coalition.types import Member, PointsTransaction, RedemptionHold
from .partners.mutations import PartnerMutations
from .partners.queries import PartnerQueries
from .partners.types import Partner, WebhookEndpoint
from .settlement.mutations import SettlementMutations
from .settlement.queries import SettlementQueries
from .settlement.types import SettlementRun


class Query(
    CoalitionQueries, PartnerQueries, CharityQueries, SettlementQueries, graphene.ObjectType
):
    pass


class Mutation(
    PartnerMutations, CoalitionMutations, CharityMutations, SettlementMutations, graphene.ObjectType
):
    pass


# Every Node type, so `node(id)` can return any of them.
NODE_TYPES = [
    Member,
    PointsTransaction,
    RedemptionHold,
    Partner,
    WebhookEndpoint,
    Charity,
    Donation,
    SettlementRun,
]

schema = graphene.Schema(query=Query, mutation=Mutation, types=NODE_TYPES)

from django.contrib import admin
from django.urls import include, path

from api.views import CoalitionGraphQLView

urlpatterns = [
    path("admin/", admin.site.urls),
    # The GraphQL API (issue 4); GraphiQL in a browser only with DEBUG or GRAPHIQL.
    path("graphql/", CoalitionGraphQLView.as_view(), name="graphql"),
    # Charity (issue 6): printable donation receipts, annual statements, public impact page.
    path("charity/", include("charity.urls")),
    # Server-rendered pages: member portal (/portal/) and finance dashboard.
    path("", include("web.urls")),
    # Settlement (issue 5): Stripe webhooks (/stripe/webhook/) and statements (/settlement/).
    path("", include("settlement.urls")),
]

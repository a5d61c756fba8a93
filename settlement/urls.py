from django.urls import path

from . import views

urlpatterns = [
    path("stripe/webhook/", views.stripe_webhook, name="stripe-webhook"),
    path(
        "settlement/runs/<int:run_id>/statements/partner/<int:partner_id>.csv",
        views.partner_statement,
        name="settlement-partner-statement",
    ),
    path(
        "settlement/runs/<int:run_id>/statements/charity/<int:charity_id>.csv",
        views.charity_statement,
        name="settlement-charity-statement",
    ),
    path("settlement/runs/<int:run_id>/lines.csv", views.run_lines_export, name="settlement-lines"),
]

from django.urls import path

from . import dashboard, portal, portal_giving

urlpatterns = [
    path("portal/login/", portal.login_view, name="portal-login"),
    path("portal/logout/", portal.logout_view, name="portal-logout"),
    path("portal/", portal.home, name="portal-home"),
    path("portal/history/", portal.history, name="portal-history"),
    path("portal/rewards/", portal.rewards, name="portal-rewards"),
]

# Member portal: giving (issue 7).
urlpatterns += [
    path("portal/give/", portal_giving.give, name="portal-give"),
    path("portal/give/confirm/", portal_giving.give_confirm, name="portal-give-confirm"),
    path("portal/give/settings/", portal_giving.giving_settings, name="portal-giving-settings"),
    path("portal/receipts/", portal_giving.receipts, name="portal-receipts"),
    path(
        "portal/receipts/<str:receipt_number>/download/",
        portal_giving.receipt_download,
        name="portal-receipt-download",
    ),
]

# Finance dashboard (issue 7): staff only.
urlpatterns += [
    path("finance/", dashboard.overview, name="finance-overview"),
    path("finance/runs/", dashboard.runs, name="finance-runs"),
    path("finance/runs/create/", dashboard.run_create, name="finance-run-create"),
    path("finance/runs/<int:run_id>/", dashboard.run_detail, name="finance-run"),
    path("finance/runs/<int:run_id>/approve/", dashboard.run_approve, name="finance-run-approve"),
    path("finance/runs/<int:run_id>/execute/", dashboard.run_execute, name="finance-run-execute"),
    path("finance/runs/<int:run_id>/discard/", dashboard.run_discard, name="finance-run-discard"),
    path(
        "finance/runs/<int:run_id>/reconcile/",
        dashboard.run_reconcile,
        name="finance-run-reconcile",
    ),
    path("finance/lines/<int:line_id>/retry/", dashboard.line_retry, name="finance-line-retry"),
    path(
        "finance/lines/<int:line_id>/carry-forward/",
        dashboard.line_carry_forward,
        name="finance-line-carry-forward",
    ),
]

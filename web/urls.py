from django.urls import path

from . import portal

urlpatterns = [
    path("portal/login/", portal.login_view, name="portal-login"),
    path("portal/logout/", portal.logout_view, name="portal-logout"),
    path("portal/", portal.home, name="portal-home"),
    path("portal/history/", portal.history, name="portal-history"),
    path("portal/rewards/", portal.rewards, name="portal-rewards"),
]

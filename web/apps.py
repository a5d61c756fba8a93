from django.apps import AppConfig


class WebConfig(AppConfig):
    """Server-rendered pages: the member portal and the finance dashboard. Like api/, an
    interface layer: it calls services and selectors and holds no business rules."""

    name = "web"
    default_auto_field = "django.db.models.BigAutoField"

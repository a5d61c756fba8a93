from django.apps import AppConfig


class CharityConfig(AppConfig):
    name = "charity"
    default_auto_field = "django.db.models.BigAutoField"

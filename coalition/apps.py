from django.apps import AppConfig


class CoalitionConfig(AppConfig):
    name = "coalition"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Issue 9: the audit trail around every app's admin (registered by now: the admin
        # app comes first in INSTALLED_APPS and autodiscovers in its own ready), and the
        # read-only admin of the trail and the outbox.
        from django.conf import settings

        from . import lookups  # noqa: F401  (registers `__any`)

        if "django.contrib.admin" in settings.INSTALLED_APPS:
            from .audit import admin_audit_install
            from .reliability_admin import register

            register()
            admin_audit_install()

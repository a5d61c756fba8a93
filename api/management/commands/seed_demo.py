"""Seed a demo coalition. Idempotent: a second run adds nothing."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from coalition.services import programme_get

DEMO_ADMIN = ("admin", "coalition-demo")


class Command(BaseCommand):
    help = "Create a demo coalition (idempotent)."

    @transaction.atomic
    def handle(self, *args, **options):
        created = []
        programme = programme_get()
        user_model = get_user_model()
        if not user_model.objects.filter(username=DEMO_ADMIN[0]).exists():
            user_model.objects.create_superuser(DEMO_ADMIN[0], password=DEMO_ADMIN[1])
            created.append("1 admin user")
        summary = ", ".join(created) if created else "nothing new"
        self.stdout.write(f"demo coalition '{programme.name}': {summary}")

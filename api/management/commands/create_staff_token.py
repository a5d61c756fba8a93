"""Issue a staff API token with the finance permissions; prints it (shown once).

Creates the user if needed (staff, no usable password: it signs in with the token, or an
operator sets a password later) and puts it in the `finance` group, which holds the
api.FinanceAccess permissions: view_members, view_finance, manage_settlement,
approve_settlement.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from api.core.auth import staff_token_create

FINANCE_GROUP = "finance"
FINANCE_PERMISSIONS = ("view_members", "view_finance", "manage_settlement", "approve_settlement")


def finance_group() -> Group:
    """The `finance` group with every finance permission (created or completed)."""
    group, _ = Group.objects.get_or_create(name=FINANCE_GROUP)
    permissions = Permission.objects.filter(
        content_type__app_label="api", codename__in=FINANCE_PERMISSIONS
    )
    if permissions.count() != len(FINANCE_PERMISSIONS):
        raise CommandError("The finance permissions are missing: run `manage.py migrate` first")
    group.permissions.add(*permissions)
    return group


class Command(BaseCommand):
    help = "Create a staff API token with finance permissions (printed once)."

    def add_arguments(self, parser):
        # Checked in handle(), so that a missing option is one clear line on stderr like
        # every other refusal (argparse would print the whole usage).
        parser.add_argument("--username", help="The staff user's username (required)")

    @transaction.atomic
    def handle(self, *args, **options):
        if not options.get("username"):
            raise CommandError("--username is required")
        username = options["username"].strip()
        user_model = get_user_model()
        if not username or len(username) > 150:
            raise CommandError("--username: 1 to 150 characters")
        try:
            user_model._meta.get_field("username").run_validators(username)
        except ValidationError as exc:
            raise CommandError(f"--username: {' '.join(exc.messages)}") from exc
        user = user_model.objects.filter(username=username).first()
        if user is None:
            user = user_model.objects.create_user(username=username, password=None)
        if not user.is_active:
            raise CommandError(f"--username: {username} is deactivated")
        if not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        user.groups.add(finance_group())
        _token, raw_token = staff_token_create(user=user)
        self.stdout.write(raw_token)

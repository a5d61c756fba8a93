"""`manage.py create_staff_token`: a missing --username is one clear line on standard
error and a non-zero exit (shared/api/COMMANDS.md), not argparse's usage."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from api.models import StaffToken
from tests import factories


@pytest.mark.django_db
@pytest.mark.parametrize("arguments", [[], ["--username="]], ids=["missing", "empty"])
def test_a_missing_username_is_one_line_and_changes_nothing(arguments):
    with pytest.raises(CommandError) as refused:
        call_command("create_staff_token", *arguments)

    assert str(refused.value) == "--username is required"
    assert (get_user_model().objects.count(), StaffToken.objects.count()) == (0, 0)


def test_as_a_real_process_one_line_on_stderr_and_a_non_zero_exit(tmp_path):
    env = factories.sqlite_process_env(tmp_path / "coalition.sqlite3")

    refused = factories.manage_process("create_staff_token", env=env)

    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.strip().splitlines() == ["CommandError: --username is required"]

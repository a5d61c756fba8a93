"""`manage.py create_staff_token`: a missing --username is one clear line on standard
error and a non-zero exit (shared/api/COMMANDS.md), not argparse's usage."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from api.models import StaffToken

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
@pytest.mark.parametrize("arguments", [[], ["--username="]], ids=["missing", "empty"])
def test_a_missing_username_is_one_line_and_changes_nothing(arguments):
    with pytest.raises(CommandError) as refused:
        call_command("create_staff_token", *arguments)

    assert str(refused.value) == "--username is required"
    assert (get_user_model().objects.count(), StaffToken.objects.count()) == (0, 0)


def test_as_a_real_process_one_line_on_stderr_and_a_non_zero_exit(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'coalition.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
    }
    env.pop("CELERY_BROKER_URL", None)

    refused = subprocess.run(
        [sys.executable, "manage.py", "create_staff_token"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.strip().splitlines() == ["CommandError: --username is required"]

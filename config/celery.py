"""The Celery app. Tasks are discovered in each app's tasks.py; the beat schedule is in settings.
Without DJANGO_SETTINGS_MODULE a worker runs the production settings (`./dev run` and the tests
set theirs)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

app = Celery("coalition")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(sender=None, **_kwargs) -> None:
    """Around every task a worker runs, what Django does around every request: close a
    connection older than CONN_MAX_AGE or left unusable by an error, keep a good one
    (CELERY_DB_REUSE_MAX). Not for a task run eagerly, inside its caller's own work."""
    if sender is None or getattr(sender.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()

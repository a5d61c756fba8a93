"""Seed the causes every installation starts with (operators add more in the admin)."""

from django.db import migrations

CAUSES = (
    ("environment", "Environment"),
    ("education", "Education"),
    ("health", "Health"),
    ("hunger", "Hunger"),
    ("animals", "Animals"),
    ("disaster-relief", "Disaster relief"),
    ("arts", "Arts"),
    ("community", "Community"),
)


def seed(apps, schema_editor):
    Cause = apps.get_model("charity", "Cause")
    for position, (code, name) in enumerate(CAUSES):
        Cause.objects.get_or_create(code=code, defaults={"name": name, "position": position})


def unseed(apps, schema_editor):
    # Only causes no charity uses can go; charities keep their cause's code regardless.
    Cause = apps.get_model("charity", "Cause")
    Charity = apps.get_model("charity", "Charity")
    used = set(Charity.objects.values_list("cause", flat=True))
    Cause.objects.filter(code__in=[code for code, _ in CAUSES]).exclude(code__in=used).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("charity", "0002_cause_charitystatuschange_donation_givingpreference_and_more"),
    ]

    operations = [migrations.RunPython(seed, unseed)]

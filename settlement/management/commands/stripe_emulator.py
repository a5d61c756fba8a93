"""``python manage.py stripe_emulator [--port 12111]``: the local Stripe emulator.

localstripe with Coalition's Connect extensions (accounts, transfers, idempotency replay,
Stripe-Account scoping, fault injection), on 127.0.0.1 only, state wiped at start. Its last
stdout line, once it answers HTTP, is ``stripe emulator on http://127.0.0.1:PORT``; access
logs go to stderr. Runs until Ctrl-C or SIGTERM. See :mod:`settlement.emulator`.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Run the local Stripe emulator (localstripe + Connect extensions) on 127.0.0.1 "
        "until stopped, with empty state."
    )
    # It touches neither the database nor the models: no checks, so it starts at once and
    # works before migrations.
    requires_system_checks = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument(
            "--port",
            default="12111",
            help="TCP port on 127.0.0.1 (default 12111; 0 picks a free one)",
        )

    def handle(self, *args, port, **options):
        try:
            from settlement.emulator import server
        except ModuleNotFoundError as error:
            if error.name not in ("localstripe", "aiohttp"):
                raise
            raise CommandError(
                f"{error.name} is not installed: it is a dev-only dependency "
                "(pip install -e '.[dev]')"
            ) from error

        try:
            port_number = server.parse_port(port)
        except ValueError as error:
            raise CommandError(str(error)) from error
        server.configure_logging()
        try:
            server.serve(port=port_number, on_ready=self._announce)
        except server.EmulatorStartError as error:
            raise CommandError(str(error)) from error

    def _announce(self, url: str) -> None:
        from settlement.emulator.server import READY_LINE

        self.stdout.write(READY_LINE.format(url=url))
        self.stdout.flush()

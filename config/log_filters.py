"""Log hygiene (issue 9): credentials never reach a log line.

The code never logs a credential on purpose; this filter, on every handler of LOGGING, is the
second line of defence for what it does not control — above all the SQL that Django logs
with DEBUG (a webhook endpoint's signing secret is stored as is, because signing needs it).
Partner keys (`ck_live_…`), staff tokens (`cs_…`), member tokens (`cm_…`) and webhook secrets
(`whsec_…`) are cut to their prefix in the message and in the SQL and parameters Django
attaches to database log records.
"""

from __future__ import annotations

import logging
import re

SECRET = re.compile(r"\b(ck_live_|cs_|cm_|whsec_)[A-Za-z0-9_\-:.]{8,}")
REDACTED = r"\1[redacted]"


def redact(text: str) -> str:
    """The text with every credential cut to its prefix."""
    return SECRET.sub(REDACTED, text)


class RedactSecretsFilter(logging.Filter):
    """Rewrites the record in place; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        for name in ("sql", "params"):
            value = getattr(record, name, None)
            if value is not None:
                text = str(value)
                if SECRET.search(text):
                    setattr(record, name, redact(text))
        return True

"""The web portal's part of erasing a member (issue 9, coalition/services/privacy.py).

A portal session keeps the member's id (web/auth.py). The member's token version, bumped by
the erasure, already makes every such session invalid; the session rows themselves are
deleted too, so nothing stored server-side still ties a browser to the person.
"""

from django.conf import settings
from django.contrib.sessions.models import Session
from django.utils import timezone

from .auth import SESSION_MEMBER

DATABASE_SESSIONS = {
    "django.contrib.sessions.backends.db",
    "django.contrib.sessions.backends.cached_db",
}


def member_sessions_erase(member) -> int:
    """Delete the member's stored portal sessions. Returns how many."""
    if settings.SESSION_ENGINE not in DATABASE_SESSIONS:
        return 0  # cookie or cache sessions: the token version bump logs them out
    session_keys = [
        session.session_key
        for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator()
        if session.get_decoded().get(SESSION_MEMBER) == member.pk
    ]
    deleted, _ = Session.objects.filter(session_key__in=session_keys).delete()
    if settings.SESSION_ENGINE.endswith("cached_db"):
        from django.contrib.sessions.backends.cached_db import SessionStore

        for session_key in session_keys:
            SessionStore(session_key).delete(session_key)
    return deleted

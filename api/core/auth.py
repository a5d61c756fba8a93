"""Who is calling: resolved once per request from `Authorization: Bearer <token>` (or, for
staff in a browser, the Django session) into `request.coalition_principal`.

Three kinds of bearer token, told apart by their prefix:

- `ck_live_…` a partner API key (partners app; stored as a SHA-256 digest) with scopes
  earn, burn, read;
- `cm_…` a member token from `memberLogin`: signed with Django's signing (SECRET_KEY),
  expiring after `MEMBER_TOKEN_TTL` seconds, carrying the member id and the member's
  `token_version`, so that a password change (which bumps the version) revokes it;
- `cs_…` a staff token from `manage.py create_staff_token`, stored as a SHA-256 digest in
  `api.StaffToken`, revocable.

A token that is unknown, expired or revoked makes the caller anonymous, with the reason kept
for the PERMISSION_DENIED message.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core import signing
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone

from coalition.selectors import Viewer

MEMBER_TOKEN_PREFIX = "cm_"
STAFF_TOKEN_PREFIX = "cs_"
PARTNER_KEY_PREFIX = "ck_live_"
MEMBER_TOKEN_SALT = "coalition.api.member-token"
MAX_TOKEN_LENGTH = 512
LAST_USED_RESOLUTION = timedelta(minutes=1)

ANONYMOUS = "anonymous"
PARTNER = "partner"
MEMBER = "member"
STAFF = "staff"


@dataclass
class Principal:
    """The caller of one request."""

    kind: str = ANONYMOUS
    partner: object | None = None  # partners.Partner
    api_key: object | None = None  # partners.ApiKey
    member: object | None = None  # coalition.Member
    user: object | None = None  # auth user (staff)
    scopes: frozenset[str] = frozenset()
    # What rate limits count against: the credential, or the client address.
    rate_key: str = "anonymous"
    credential_error: str | None = None
    _perms: dict[str, bool] = field(default_factory=dict, repr=False)

    @property
    def is_partner(self) -> bool:
        return self.kind == PARTNER

    @property
    def is_member(self) -> bool:
        return self.kind == MEMBER

    @property
    def is_staff(self) -> bool:
        return self.kind == STAFF

    def has_perm(self, codename: str) -> bool:
        """A staff user's Django permission, e.g. "api.view_finance" (cached per request)."""
        if not self.is_staff:
            return False
        if codename not in self._perms:
            self._perms[codename] = bool(self.user.has_perm(codename))
        return self._perms[codename]

    @property
    def viewer(self) -> Viewer:
        """The reader the selectors filter rows for."""
        if self.is_member:
            return Viewer(member_id=self.member.pk)
        if self.is_partner:
            return Viewer(partner_id=self.partner.pk)
        if self.is_staff and self.has_perm("api.view_members"):
            return Viewer(staff=True)
        return Viewer()


def principal_of(info_or_request) -> Principal:
    request = getattr(info_or_request, "context", info_or_request)
    principal = getattr(request, "coalition_principal", None)
    if principal is None:
        principal = principal_resolve(request)
        request.coalition_principal = principal
    return principal


# --------------------------------------------------------------------------- resolution


def client_address(request) -> str:
    """The client's address, for rate limits: REMOTE_ADDR, or behind TRUSTED_PROXY_COUNT
    reverse proxies the address the outermost trusted one saw (that many entries from the
    right of X-Forwarded-For: those the client wrote itself, further left, are ignored)."""
    trusted = getattr(settings, "TRUSTED_PROXY_COUNT", 0)
    if trusted > 0:
        forwarded = [
            part.strip()
            for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if part.strip()
        ]
        if len(forwarded) >= trusted:
            return forwarded[-trusted]
    return request.META.get("REMOTE_ADDR") or "unknown"


def principal_resolve(request) -> Principal:
    """The caller of this request, from its bearer token or its staff session."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    anonymous = Principal(rate_key=f"ip:{client_address(request)}")
    if header:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            anonymous.credential_error = "The Authorization header must be 'Bearer <token>'"
            return anonymous
        principal = _bearer_principal(token)
        if principal is None:
            anonymous.credential_error = "The bearer token is invalid, expired or revoked"
            return anonymous
        return principal
    return _session_principal(request) or anonymous


def _bearer_principal(token: str) -> Principal | None:
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    if token.startswith(PARTNER_KEY_PREFIX):
        from partners.selectors import api_key_authenticate

        key = api_key_authenticate(raw_key=token)
        if key is None:
            return None
        return Principal(
            kind=PARTNER,
            partner=key.partner,
            api_key=key,
            scopes=frozenset(key.scopes or ()),
            rate_key=f"apikey:{key.pk}",
        )
    if token.startswith(MEMBER_TOKEN_PREFIX):
        member = member_token_verify(token)
        if member is None:
            return None
        return Principal(kind=MEMBER, member=member, rate_key=f"member:{member.pk}")
    if token.startswith(STAFF_TOKEN_PREFIX):
        staff_token = staff_token_authenticate(token)
        if staff_token is None:
            return None
        return Principal(kind=STAFF, user=staff_token.user, rate_key=f"stafftoken:{staff_token.pk}")
    return None


def _session_principal(request) -> Principal | None:
    """Staff logged in to the admin can use the API from the same browser (GraphiQL). The
    session cookie is ambient, so a POST must pass Django's CSRF check to use it."""
    if settings.SESSION_COOKIE_NAME not in request.COOKIES or not hasattr(request, "user"):
        return None
    if request.method == "POST":
        refused = CsrfViewMiddleware(lambda _request: None).process_view(request, None, (), {})
        if refused is not None:
            return None
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return None
    return Principal(kind=STAFF, user=user, rate_key=f"user:{user.pk}")


# --------------------------------------------------------------------------- member tokens


def member_token_ttl() -> int:
    return int(getattr(settings, "MEMBER_TOKEN_TTL", 24 * 3600))


def member_token_issue(member) -> tuple[str, datetime]:
    """A signed, expiring token for the member, and when it expires."""
    payload = {"m": member.pk, "v": member.token_version}
    token = MEMBER_TOKEN_PREFIX + signing.dumps(payload, salt=MEMBER_TOKEN_SALT, compress=False)
    return token, timezone.now() + timedelta(seconds=member_token_ttl())


def member_token_verify(token: str):
    """The member a token names, if its signature, age and version hold and the member is
    not closed; None otherwise."""
    from coalition.models import Member

    try:
        payload = signing.loads(
            token[len(MEMBER_TOKEN_PREFIX) :], salt=MEMBER_TOKEN_SALT, max_age=member_token_ttl()
        )
    except signing.BadSignature:  # also SignatureExpired
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("m"), int):
        return None
    member = Member.objects.filter(pk=payload["m"]).first()
    if member is None or member.token_version != payload.get("v"):
        return None
    if member.status == Member.Status.CLOSED:
        return None
    return member


# --------------------------------------------------------------------------- staff tokens


def staff_token_digest(raw_token: str) -> str:
    """Staff tokens are 256-bit random: a plain SHA-256 is enough, and indexable."""
    return hashlib.sha256(raw_token.encode("utf-8", "surrogatepass")).hexdigest()


def staff_token_create(*, user):
    """A new staff token for the user. Returns the row and the secret, shown only once."""
    from api.models import StaffToken

    raw_token = STAFF_TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = StaffToken.objects.create(
        user=user,
        prefix=raw_token[: len(STAFF_TOKEN_PREFIX) + 6],
        digest=staff_token_digest(raw_token),
    )
    return token, raw_token


def staff_token_authenticate(raw_token: str):
    """The active staff token with this secret, for an active staff user, or None."""
    from api.models import StaffToken

    digest = staff_token_digest(raw_token)
    token = StaffToken.objects.select_related("user").filter(digest=digest).first()
    if token is None or not hmac.compare_digest(token.digest, digest) or token.revoked_at:
        return None
    if not (token.user.is_active and token.user.is_staff):
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        StaffToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token

"""Who may call what, declared once per operation.

A query field is decorated with `@permission_required(...)`; a mutation class sets
`permission = ...`. Both refuse with PERMISSION_DENIED before anything is read or written.
Which *rows* a permitted caller then sees is decided by the selectors (`Principal.viewer`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from coalition.errors import PermissionDenied

from .auth import Principal, principal_of
from .errors import api_error


class Permission:
    """A rule about the caller. Combine with `|` (either suffices)."""

    description = "nobody"

    def allows(self, principal: Principal) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def refusal(self, principal: Principal) -> PermissionDenied:
        reason = principal.credential_error or f"This needs {self.description}"
        return PermissionDenied(reason)

    def check(self, principal: Principal) -> None:
        """Raise PermissionDenied unless the caller is allowed."""
        if not self.allows(principal):
            raise self.refusal(principal)

    def __or__(self, other: Permission) -> Permission:
        return AnyOf(self, other)


class AnyOf(Permission):
    def __init__(self, *permissions: Permission):
        self.permissions = permissions
        self.description = " or ".join(p.description for p in permissions)

    def allows(self, principal: Principal) -> bool:
        return any(p.allows(principal) for p in self.permissions)

    def refusal(self, principal: Principal) -> PermissionDenied:
        for permission in self.permissions:
            if isinstance(permission, PartnerKey) and principal.is_partner:
                return permission.refusal(principal)
        return super().refusal(principal)


class AllowAny(Permission):
    description = "nothing"

    def allows(self, principal: Principal) -> bool:
        return True


class IsMember(Permission):
    description = "a member token (from memberLogin)"

    def allows(self, principal: Principal) -> bool:
        return principal.is_member


class PartnerKey(Permission):
    """A partner API key of an active partner, holding one of `scopes` (any scope if none)."""

    def __init__(self, *scopes: str):
        self.scopes = frozenset(scopes)
        self.description = (
            f"a partner API key with the {' or '.join(sorted(self.scopes))} scope"
            if scopes
            else "a partner API key"
        )

    def allows(self, principal: Principal) -> bool:
        if not principal.is_partner or not principal.partner.is_active:
            return False
        return not self.scopes or bool(self.scopes & principal.scopes)

    def refusal(self, principal: Principal) -> PermissionDenied:
        if principal.is_partner and not principal.partner.is_active:
            return PermissionDenied(f"Partner {principal.partner.code} is suspended")
        return super().refusal(principal)


class StaffPermission(Permission):
    """A staff token (or staff session) whose user holds the Django permission."""

    def __init__(self, codename: str):
        self.codename = codename
        self.description = f"a staff token with the {codename} permission"

    def allows(self, principal: Principal) -> bool:
        return principal.has_perm(self.codename)


# The finance permissions (api.FinanceAccess) staff are granted through the `finance` group.
VIEW_MEMBERS = StaffPermission("api.view_members")
VIEW_FINANCE = StaffPermission("api.view_finance")
MANAGE_SETTLEMENT = StaffPermission("api.manage_settlement")
APPROVE_SETTLEMENT = StaffPermission("api.approve_settlement")


def permission_required(permission: Permission) -> Callable:
    """Declare who may resolve a query field; others get a PERMISSION_DENIED error."""

    def decorate(resolver: Callable) -> Callable:
        @functools.wraps(resolver)
        def wrapper(root, info, **kwargs):
            principal = principal_of(info)
            if not permission.allows(principal):
                raise api_error(permission.refusal(principal))
            return resolver(root, info, **kwargs)

        wrapper.permission = permission
        return wrapper

    return decorate

"""Programme mutations: a member logs in."""

from __future__ import annotations

import graphene

from coalition.errors import LimitExceeded

from ..core.auth import member_token_issue
from ..core.limits import rate_limit_hit
from ..core.mutations import BaseMutation, Payload
from ..core.permissions import AllowAny
from ..core.scalars import DateTime
from .types import Member


class MemberLoginInput(graphene.InputObjectType):
    email = graphene.String(required=True)
    password = graphene.String(required=True)


class MemberLoginPayload(Payload):
    token = graphene.String(description="Send as 'Authorization: Bearer <token>'.")
    expires_at = DateTime()
    member = graphene.Field(Member)


class MemberLogin(BaseMutation):
    """Exchange a member's email and password for a member token (expiring; a password
    change revokes it). Wrong email and wrong password are the same refusal."""

    class Arguments:
        input = MemberLoginInput(required=True)

    class Meta:
        output = MemberLoginPayload

    permission = AllowAny()

    @classmethod
    def perform(cls, info, principal, input):
        from coalition.selectors import Viewer, member_authenticate

        # Besides the per-caller limit: guesses at one account from many addresses.
        email_key = f"email:{(input.email or '').strip().lower()[:254]}"
        wait = rate_limit_hit(email_key, "memberLogin:email")
        if wait is not None:
            raise LimitExceeded(f"Too many login attempts for this email; retry in {wait}s")
        member = member_authenticate(email=input.email, password=input.password)
        token, expires_at = member_token_issue(member)
        member.coalition_viewer = Viewer(member_id=member.pk)  # the payload shows it itself
        return MemberLoginPayload(token=token, expires_at=expires_at, member=member, errors=[])


class CoalitionMutations(graphene.ObjectType):
    member_login = MemberLogin.Field()

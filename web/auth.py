"""Member sessions for the portal: members are not Django users, so the session keeps the
member id and the member's token version (a password change logs every session out)."""

from functools import wraps

from django.shortcuts import redirect

from coalition.models import Member

SESSION_MEMBER = "coalition_member_id"
SESSION_VERSION = "coalition_member_token_version"


def member_login(request, member: Member) -> None:
    request.session.cycle_key()  # no session fixation
    request.session[SESSION_MEMBER] = member.pk
    request.session[SESSION_VERSION] = member.token_version


def member_logout(request) -> None:
    request.session.flush()


def session_member(request) -> Member | None:
    member_id = request.session.get(SESSION_MEMBER)
    if member_id is None:
        return None
    member = Member.objects.filter(pk=member_id).first()
    if (
        member is None
        or member.status != Member.Status.ACTIVE
        or member.token_version != request.session.get(SESSION_VERSION)
    ):
        return None
    return member


def member_required(view):
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        member = session_member(request)
        if member is None:
            return redirect(f"/portal/login/?next={request.path}")
        request.member = member
        return view(request, *args, **kwargs)

    return wrapper

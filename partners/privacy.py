"""The partners app's part of erasing a member (issue 9, coalition/services/privacy.py):
the links between the person and each partner's own customer records go."""

from .models import PartnerIdentity


def member_identities_erase(member) -> int:
    """Delete the member's partner identities (customer references). Returns how many."""
    deleted, _ = PartnerIdentity.objects.filter(member=member).delete()
    return deleted

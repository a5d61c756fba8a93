"""The charity app's part of erasing a member (issue 9, coalition/services/privacy.py).

The member's automatic-giving choices (round-up on earn, the charity that gets points about
to expire) are personal choices and go. Donations stay: they are ledger transactions,
receipts and settlement history, and name the member only by id (a pseudonym once the
person is erased); a receipt mail not yet sent is never sent to an erased member
(`charity.tasks.email_receipt`). They store no other personal detail of the donor.
"""

from .models import GivingPreference


def member_giving_erase(member) -> int:
    """Delete the member's giving preferences. Returns how many rows went (0 or 1)."""
    deleted, _ = GivingPreference.objects.filter(member=member).delete()
    return deleted

"""Per-connected-account visibility for everything localstripe keeps in its store.

localstripe keeps every object in one process-wide dict (``localstripe.resources.store``)
keyed ``"<object>:<id>"`` and ignores the ``Stripe-Account`` header. Stripe itself keeps a
connected account's objects apart: a customer created with ``Stripe-Account: acct_x`` cannot
be retrieved or listed by the platform, nor by another account.

Rather than re-implementing every localstripe resource, the emulator swaps the class of that
one store object for :class:`ScopedStore` (see :func:`install`). Every lookup localstripe
makes (``store.get``, ``store.keys()``, ``store.items()``, ``in``) then only sees the objects
of the account the current request acts for, which the account middleware puts in
:data:`current_account`. The result is that *all* resources are scoped, localstripe's and
ours alike, with two deliberate exceptions listed in :data:`GLOBAL_OBJECTS`.

The swap also turns off localstripe's pickling of the whole store to the fixed file
``/tmp/localstripe.pickle`` on every write: the emulator always starts from scratch, several
emulators (parallel test runs, the demo) would otherwise overwrite one another's file, and
the file may belong to another user, which would make every write fail.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from contextvars import ContextVar

from localstripe import resources as ls_resources
from localstripe.resources import Event, Store

#: The connected account the current request acts for (its ``Stripe-Account`` header), or
#: ``None`` for the platform. Set per request by the account middleware; tasks the request
#: spawns (delayed webhooks, asynchronous charges) inherit it, as they should.
current_account: ContextVar[str | None] = ContextVar("coalition_stripe_account", default=None)

#: Object types visible whatever the account: connected accounts are platform-level objects
#: that requests on behalf of an account must still be able to name (a transfer's
#: destination, the ``Stripe-Account`` header itself).
GLOBAL_OBJECTS = frozenset({"account"})

# Store key -> owning connected account. Platform objects have no entry.
_owners: dict[str, str] = {}


def _object_type(key: str) -> str | None:
    """The ``object`` part of a store key, or ``None`` for singletons such as ``balance``."""
    object_type, sep, _ = key.partition(":")
    return object_type if sep else None


def _is_scoped(key: str) -> bool:
    object_type = _object_type(key)
    return object_type is not None and object_type not in GLOBAL_OBJECTS


class ScopedStore(Store):
    """localstripe's store, seen through the account of the current request."""

    def _visible(self, key: str) -> bool:
        if not _is_scoped(key):
            return True
        return _owners.get(key) == current_account.get()

    def owner_of(self, key: str) -> str | None:
        """The connected account that owns ``key``, or ``None`` for the platform."""
        return _owners.get(key)

    def __setitem__(self, key, value):
        if not dict.__contains__(self, key) and _is_scoped(key):
            account = current_account.get()
            if account is not None:
                _owners[key] = account
                if isinstance(value, Event):
                    # Stripe marks events that happened on a connected account with the
                    # account id, which is how Connect webhook receivers tell them apart.
                    value.account = account
        # dict's own method on purpose: Store.__setitem__ would pickle the store to disk.
        dict.__setitem__(self, key, value)

    def __delitem__(self, key):
        dict.__delitem__(self, key)
        _owners.pop(key, None)

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) and self._visible(key)

    def __iter__(self) -> Iterator[str]:
        return (key for key in list(dict.keys(self)) if self._visible(key))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def get(self, key, default=None):
        if key in self:
            return dict.__getitem__(self, key)
        return default

    def keys(self):
        # The abc views answer `in`, iteration and len() through the methods above.
        return KeysView(self)

    def items(self):
        return ItemsView(self)

    def values(self):
        return ValuesView(self)

    def clear(self):
        dict.clear(self)
        _owners.clear()

    def dump_to_disk(self):
        """Do nothing: the emulator never persists (see the module docstring)."""

    def try_load_from_disk(self):
        """Do nothing: the emulator always starts from scratch."""


def install() -> ScopedStore:
    """Make localstripe's store a :class:`ScopedStore` and empty it. Safe to call twice.

    The object itself is kept (only its class changes) because localstripe's modules hold
    references to it under several names.
    """
    store = ls_resources.store
    if type(store) is not ScopedStore:
        store.__class__ = ScopedStore
    store.clear()
    return store

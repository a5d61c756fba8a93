"""Request-scoped batch loaders.

Execution is synchronous (graphene-django), so there are no promises to batch on. Instead a
connection resolver tells the loaders which keys its page will need (`expect`), and the first
`load` of any of them fetches all expected keys in one query. A field that nobody asked for
is never fetched; a page of 100 transactions costs one query per related table, not 100.

Loaders live on the request (`loaders_for(info)`), so nothing is cached across requests.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

_MISSING = object()


class BatchLoader:
    def __init__(self, fetch: Callable[[list], dict]):
        self._fetch = fetch
        self._cache: dict[Hashable, Any] = {}
        self._pending: set[Hashable] = set()

    def expect(self, keys: Iterable[Hashable]) -> None:
        """Announce keys a later `load` will probably ask for, to fetch them together."""
        self._pending.update(key for key in keys if key is not None and key not in self._cache)

    def prime(self, key: Hashable, value: Any) -> None:
        self._cache[key] = value
        self._pending.discard(key)

    def load(self, key: Hashable) -> Any:
        if key is None:
            return None
        value = self._cache.get(key, _MISSING)
        if value is not _MISSING:
            return value
        batch = self._pending | {key}
        self._pending = set()
        found = self._fetch(sorted(batch))
        for batch_key in batch:
            self._cache[batch_key] = found.get(batch_key)
        return self._cache[key]


class Loaders:
    """Every loader of one request, created on first use."""

    def __init__(self):
        self._loaders: dict[Hashable, BatchLoader] = {}

    def get(self, name: Hashable, fetch: Callable[[list], dict]) -> BatchLoader:
        loader = self._loaders.get(name)
        if loader is None:
            loader = self._loaders[name] = BatchLoader(fetch)
        return loader

    # The loaders the schema uses -------------------------------------------------------

    def partners(self) -> BatchLoader:
        def fetch(ids):
            from partners.models import Partner

            return Partner.objects.in_bulk(ids)

        return self.get("partners", fetch)

    def charities(self) -> BatchLoader:
        def fetch(ids):
            from charity.models import Charity
            from charity.selectors import charities_with_totals

            return charities_with_totals(Charity.objects.all()).in_bulk(ids)

        return self.get("charities", fetch)

    def transactions(self, viewer) -> BatchLoader:
        """Transactions by id, as this viewer may see them (others load as None)."""

        def fetch(ids):
            from coalition.selectors import transactions_visible

            return transactions_visible(viewer=viewer).in_bulk(ids)

        return self.get(("transactions", viewer), fetch)

    def wallets(self) -> BatchLoader:
        def fetch(member_ids):
            from coalition.selectors import wallets_by_member

            return wallets_by_member(member_ids=member_ids)

        return self.get("wallets", fetch)


def loaders_for(info) -> Loaders:
    request = info.context
    loaders = getattr(request, "coalition_loaders", None)
    if loaders is None:
        loaders = request.coalition_loaders = Loaders()
    return loaders

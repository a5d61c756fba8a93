"""Limits that keep one caller from exhausting the service.

Per document (checked after validation, before execution, against the operation that will
run, with its variables):
- depth: nesting of selections (`MAX_DEPTH`, default 10);
- cost: every field costs 1, and what is below a list costs once per item it can return —
  `first` (or the default page size) for connections, `LIST_COST` for other lists
  (`MAX_COST`);
- aliases: aliased fields in all (`MAX_ALIASES`), so one request cannot repeat an expensive
  field hundreds of times;
- mutation fields: at most `MAX_MUTATION_FIELDS` root fields in a mutation, so one request
  cannot carry 100 aliased redeemPoints.

Per credential and operation: a fixed-window counter in Django's cache (`RATE_LIMITS`;
Redis via CACHE_URL in production, so every web process shares the counts).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
)

DEFAULT_LIMITS = {
    "MAX_BODY_BYTES": 1024 * 1024,
    "MAX_TOKENS": 10_000,
    "MAX_DEPTH": 10,
    "MAX_COST": 20_000,
    "MAX_ALIASES": 30,
    "MAX_MUTATION_FIELDS": 10,
    "DEFAULT_PAGE_SIZE": 20,
    "MAX_PAGE_SIZE": 100,
    "LIST_COST": 10,
}

DEFAULT_RATE_LIMITS = {
    # operation (root field name) -> "count/period"; period s, m, h or d.
    "default": "3000/m",
    "memberLogin": "30/m",
    # Attempts at one email whoever makes them (password guessing from many addresses).
    "memberLogin:email": "20/15m",
}


def limit(name: str) -> int:
    return getattr(settings, "API_LIMITS", {}).get(name, DEFAULT_LIMITS[name])


def limit_error(message: str, node=None) -> GraphQLError:
    return GraphQLError(
        message, nodes=[node] if node else None, extensions={"code": "LIMIT_EXCEEDED"}
    )


# --------------------------------------------------------------------------- document limits


@dataclass
class _Walk:
    schema: GraphQLSchema
    fragments: dict[str, FragmentDefinitionNode]
    variables: dict
    aliases: int = 0
    max_depth: int = 0
    steps: int = 0


class _TooLarge(Exception):
    """The document takes too many steps to even measure (e.g. a fragment bomb)."""


MAX_WALK_STEPS = 100_000


def _page_size(field: FieldNode, variables: dict) -> int | None:
    for argument in field.arguments or ():
        if argument.name.value != "first":
            continue
        value = argument.value
        if isinstance(value, IntValueNode):
            return int(value.value)
        if isinstance(value, VariableNode):
            given = variables.get(value.name.value)
            return given if isinstance(given, int) else None
    return None


def _walk(
    walk: _Walk, selection_set: SelectionSetNode, parent_type, depth: int, seen: frozenset
) -> int:
    """The cost of a selection set; records aliases and depth on the way."""
    cost = 0
    walk.max_depth = max(walk.max_depth, depth)
    for selection in selection_set.selections:
        walk.steps += 1
        if walk.steps > MAX_WALK_STEPS:
            raise _TooLarge
        if isinstance(selection, FieldNode):
            name = selection.name.value
            if selection.alias is not None:
                walk.aliases += 1
            if name.startswith("__"):
                cost += 1
                continue
            field_def = getattr(parent_type, "fields", {}).get(name) if parent_type else None
            field_cost = 1
            if selection.selection_set is not None and field_def is not None:
                child_type = get_named_type(field_def.type)
                multiplier = 1
                if "first" in field_def.args:
                    default_size, max_size = limit("DEFAULT_PAGE_SIZE"), limit("MAX_PAGE_SIZE")
                    size = _page_size(selection, walk.variables)
                    multiplier = max(1, min(default_size if size is None else size, max_size))
                elif isinstance(get_nullable_type(field_def.type), GraphQLList) and not (
                    child_type.name.endswith("Edge")
                ):
                    multiplier = limit("LIST_COST")
                field_cost += multiplier * _walk(
                    walk, selection.selection_set, child_type, depth + 1, seen
                )
            cost += field_cost
        elif isinstance(selection, InlineFragmentNode):
            fragment_type = parent_type
            if selection.type_condition is not None:
                fragment_type = walk.schema.get_type(selection.type_condition.name.value)
            cost += _walk(walk, selection.selection_set, fragment_type, depth, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = walk.fragments.get(name)
            if fragment is None or name in seen:
                continue
            fragment_type = walk.schema.get_type(fragment.type_condition.name.value)
            cost += _walk(walk, fragment.selection_set, fragment_type, depth, seen | {name})
    return cost


def root_fields(operation: OperationDefinitionNode, fragments: dict) -> list[FieldNode]:
    """The operation's root fields, through fragments (introspection fields excluded)."""
    found: list[FieldNode] = []

    def collect(selection_set: SelectionSetNode, seen: frozenset) -> None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if not selection.name.value.startswith("__"):
                    found.append(selection)
            elif isinstance(selection, InlineFragmentNode):
                collect(selection.selection_set, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in fragments and name not in seen:
                    collect(fragments[name].selection_set, seen | {name})

    collect(operation.selection_set, frozenset())
    return found


def document_limits_check(
    schema: GraphQLSchema, document, operation: OperationDefinitionNode, variables: dict | None
) -> list[GraphQLError]:
    """Every limit the operation breaks (empty: it may run)."""
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    root_type = schema.get_root_type(operation.operation)
    walk = _Walk(schema=schema, fragments=fragments, variables=variables or {})
    try:
        cost = _walk(walk, operation.selection_set, root_type, 1, frozenset())
    except _TooLarge:
        return [limit_error("The document expands to too many fields")]
    errors = []
    if walk.max_depth > limit("MAX_DEPTH"):
        errors.append(
            limit_error(f"The query is nested {walk.max_depth} deep; at most {limit('MAX_DEPTH')}")
        )
    if cost > limit("MAX_COST"):
        errors.append(
            limit_error(
                f"The query may cost {cost}; at most {limit('MAX_COST')} (ask for smaller pages "
                "or fewer fields)"
            )
        )
    if walk.aliases > limit("MAX_ALIASES"):
        errors.append(
            limit_error(f"The document has {walk.aliases} aliases; at most {limit('MAX_ALIASES')}")
        )
    if operation.operation == OperationType.MUTATION:
        count = len(root_fields(operation, fragments))
        if count > limit("MAX_MUTATION_FIELDS"):
            errors.append(
                limit_error(
                    f"The mutation has {count} fields; at most {limit('MAX_MUTATION_FIELDS')} "
                    "per request"
                )
            )
    return errors


# --------------------------------------------------------------------------- rate limits

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")


def parse_rate(rate: str) -> tuple[int, int]:
    """ "100/m" -> (100, 60); "10/15m" -> (10, 900)."""
    match = _RATE_RE.match(rate or "")
    if not match:
        raise ValueError(f"bad rate {rate!r}: use count/period, e.g. 100/m")
    count, multiple, unit = match.groups()
    return int(count), int(multiple or 1) * _PERIODS[unit]


def rate_for(operation: str) -> tuple[int, int] | None:
    rates = {**DEFAULT_RATE_LIMITS, **getattr(settings, "RATE_LIMITS", {})}
    rate = rates.get(operation, rates.get("default"))
    return parse_rate(rate) if rate else None


def rate_limit_hit(key: str, operation: str) -> int | None:
    """Count one call of `operation` by `key`. None if allowed, else the seconds to wait."""
    rate = rate_for(operation)
    if rate is None:
        return None
    allowed, period = rate
    now = time.time()
    window = int(now // period)
    # Hashed: a caller-chosen part (an email) is neither stored as is nor able to make the
    # key too long or unusable for a cache backend (memcached refuses spaces, control chars).
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    cache_key = f"coalition:rl:{operation}:{digest}:{window}"
    if cache.add(cache_key, 1, timeout=period + 1):
        count = 1
    else:
        try:
            count = cache.incr(cache_key)
        except ValueError:  # expired between add and incr
            cache.add(cache_key, 1, timeout=period + 1)
            count = 1
    if count > allowed:
        return max(1, int((window + 1) * period - now))
    return None

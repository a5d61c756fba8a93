"""The one base mutation: declared permission, rate limit, one service call, and domain
errors turned into `errors { field code message }` of the payload.

A subclass declares:
    class Arguments: input = XInput(required=True)
    class Meta: output = XPayload
    permission = PartnerKey("earn")
    @classmethod
    def perform(cls, info, principal, input) -> XPayload   # resolve ids, call one service
"""

from __future__ import annotations

from typing import ClassVar

import graphene
from graphene.utils.str_converters import to_camel_case
from graphql_relay import from_global_id

from coalition.errors import CoalitionError, LimitExceeded, NotFound

from .auth import Principal, principal_of
from .errors import Error, error_entry
from .limits import rate_limit_hit
from .permissions import Permission


class Payload(graphene.ObjectType):
    """Base of every mutation payload: `errors` is empty on success."""

    class Meta:
        abstract = True

    errors = graphene.List(graphene.NonNull(Error), required=True)

    @staticmethod
    def resolve_errors(root, info):
        return root.errors or []


class BaseMutation(graphene.Mutation):
    class Meta:
        abstract = True

    permission: ClassVar[Permission]

    @classmethod
    def Field(cls, *args, **kwargs):  # noqa: N802 - graphene's name
        """The payload is never null: failures are in its `errors`."""
        kwargs.setdefault("required", True)
        return super().Field(*args, **kwargs)

    @classmethod
    def input_fields(cls) -> frozenset[str]:
        """The input's field names as clients write them (camelCase)."""
        input_class = type(cls.Arguments.input)  # the InputObjectType, mounted as `input`
        return frozenset(
            getattr(field, "name", None) or to_camel_case(name)
            for name, field in input_class._meta.fields.items()
        )

    @classmethod
    def mutate(cls, root, info, input):
        principal = principal_of(info)
        # What earlier fields of this document loaded may be stale after this write.
        info.context.coalition_loaders = None
        try:
            wait = rate_limit_hit(principal.rate_key, info.field_name)
            if wait is not None:
                raise LimitExceeded(f"Too many {info.field_name} requests; retry in {wait}s")
            cls.permission.check(principal)
            return cls.perform(info, principal, input)
        except CoalitionError as error:
            return cls._meta.output(errors=[error_entry(error, cls.input_fields())])

    @classmethod
    def perform(cls, info, principal: Principal, input):  # pragma: no cover - abstract
        raise NotImplementedError


def decode_id(global_id: str, expected_type: str, *, field: str) -> int:
    """The primary key in a global id of the expected type; anything else is NOT_FOUND on
    the input field (a wrong type is as unknown as a wrong number)."""
    refused = NotFound(f"No such {expected_type}", field=field)
    if not isinstance(global_id, str) or len(global_id) > 200:
        raise refused
    type_name, raw_pk = from_global_id(global_id)  # garbage decodes to ("", "")
    if type_name != expected_type or not raw_pk.isdigit() or len(raw_pk) > 18:
        raise refused
    return int(raw_pk)

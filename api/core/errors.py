"""Errors as the API shows them.

Business failures are `CoalitionError`s raised by services and selectors. A mutation turns
them into `errors { field code message }` entries of its payload (see `mutations.py`); a query
field raises them as GraphQL errors whose `extensions.code` is the same contract code.
Anything else is unexpected: the view logs it with the request id and answers a generic
message (see `views.py`), never internals.
"""

from __future__ import annotations

import graphene
from graphql import GraphQLError

from coalition.errors import CoalitionError
from coalition.errors import ErrorCode as DomainErrorCode

ErrorCode = graphene.Enum.from_enum(DomainErrorCode, description="Why a request was refused.")


class Error(graphene.ObjectType):
    """One reason a mutation was refused. `field` is the path of the input value at fault
    (`input.amount`, `input.lineItems.0.unitPrice`), or null for the request as a whole."""

    field = graphene.String()
    code = graphene.Field(ErrorCode, required=True)
    message = graphene.String(required=True)

    class Meta:
        name = "Error"


def api_error(error: CoalitionError) -> GraphQLError:
    """A query-side refusal: a GraphQL error carrying the contract code."""
    extensions = {"code": str(error.code)}
    if error.field:
        extensions["field"] = error.field
    return GraphQLError(error.message, original_error=error, extensions=extensions)


def input_path(field: str | None, input_fields: frozenset[str]) -> str | None:
    """The service's field name ("amount", "lineItems.0.unitPrice") as the path of the value
    in the mutation's input ("input.amount"). Names that are not input fields (an internal
    "partner", "kind") give null: the error is about the request as a whole."""
    if not field:
        return None
    head = field.split(".", 1)[0]
    if head not in input_fields:
        return None
    return f"input.{field}"


def error_entry(error: CoalitionError, input_fields: frozenset[str]) -> dict:
    return {
        "field": input_path(error.field, input_fields),
        "code": str(error.code),
        "message": error.message,
    }

"""Scalars: exact decimals sent as strings, and time-zone-aware ISO 8601 date-times."""

from __future__ import annotations

import datetime as dt
import decimal

import graphene
from graphql import GraphQLError
from graphql.language import FloatValueNode, IntValueNode, StringValueNode

MAX_DECIMAL_LENGTH = 40


def _decimal(value: str) -> decimal.Decimal:
    if len(value) > MAX_DECIMAL_LENGTH:
        raise GraphQLError(f"Decimal longer than {MAX_DECIMAL_LENGTH} characters")
    try:
        number = decimal.Decimal(value.strip())
    except (decimal.InvalidOperation, ValueError) as exc:
        raise GraphQLError(f"Not a decimal number: {value!r}") from exc
    if not number.is_finite():
        raise GraphQLError("Decimal must be finite")
    if abs(number.as_tuple().exponent) > MAX_DECIMAL_LENGTH:
        raise GraphQLError("Decimal exponent out of range")
    return number


class Decimal(graphene.Scalar):
    """An exact decimal number, sent and received as a string: "12.50".

    JSON numbers with a fraction are refused in variables, because a float has already lost
    the exact value on its way here; write "12.50".
    """

    @staticmethod
    def serialize(value):
        if isinstance(value, decimal.Decimal):
            return format(value, "f")
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str):
            return format(_decimal(value), "f")
        raise GraphQLError(f"Cannot represent {type(value).__name__} as Decimal")

    @staticmethod
    def parse_value(value):
        if isinstance(value, str):
            return _decimal(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return decimal.Decimal(value)
        raise GraphQLError('Decimal values are sent as strings, e.g. "12.50"')

    @staticmethod
    def parse_literal(node, _variables=None):
        # A literal keeps its exact text, so 12.50 written in the query is still exact.
        if isinstance(node, StringValueNode | IntValueNode | FloatValueNode):
            return _decimal(node.value)
        raise GraphQLError('Decimal values are sent as strings, e.g. "12.50"')


class DateTime(graphene.Scalar):
    """An ISO 8601 date and time with its offset: "2025-01-31T14:05:00+00:00"."""

    @staticmethod
    def serialize(value):
        if isinstance(value, dt.datetime):
            return value.isoformat()
        raise GraphQLError(f"Cannot represent {type(value).__name__} as DateTime")

    @staticmethod
    def parse_value(value):
        if not isinstance(value, str) or len(value) > 64:
            raise GraphQLError("DateTime values are ISO 8601 strings")
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise GraphQLError(f"Not an ISO 8601 date-time: {value!r}") from exc
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise GraphQLError("DateTime values need a time zone offset (e.g. +00:00 or Z)")
        return moment

    @classmethod
    def parse_literal(cls, node, _variables=None):
        if isinstance(node, StringValueNode):
            return cls.parse_value(node.value)
        raise GraphQLError("DateTime values are ISO 8601 strings")

"""The GraphQL endpoint (`/graphql/`): request hygiene around graphene's execution.

- POST (queries and mutations) and GET (queries only); one operation per request: a JSON
  list (batching) is refused with 400.
- Bodies above `API_LIMITS["MAX_BODY_BYTES"]` (1 MB) are refused with 413.
- The caller is resolved once (`request.coalition_principal`, see core/auth.py).
- Standard GraphQL validation, then depth, cost, alias and mutation-size limits
  (core/limits.py); introspection only when DEBUG or GRAPHQL_INTROSPECTION.
- Query root fields are rate-limited here (429); mutations report LIMIT_EXCEEDED in their
  payload's `errors` (core/mutations.py).
- Every response carries `X-Request-ID`; unexpected exceptions are logged with it and
  answered with a generic error that carries the id, never internals.
- GraphiQL (GET from a browser) only when DEBUG or GRAPHIQL.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from graphene_django.views import GraphQLView
from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    NoSchemaIntrospectionCustomRule,
    OperationType,
    execute,
    get_operation_ast,
    parse,
    specified_rules,
    validate,
)

from coalition.errors import CoalitionError

from .core.auth import principal_of
from .core.limits import document_limits_check, limit, limit_error, rate_limit_hit, root_fields

logger = logging.getLogger("api")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_FAILED = object()


def _request_id(request) -> str:
    """The caller's X-Request-ID when it is sane (a proxy may set it), else a new one."""
    given = request.META.get("HTTP_X_REQUEST_ID", "")
    return given if _REQUEST_ID_RE.match(given) else uuid.uuid4().hex


def _json(payload: dict, status: int = 200) -> HttpResponse:
    return HttpResponse(
        json.dumps(payload, separators=(",", ":")), status=status, content_type="application/json"
    )


def _failure(message: str, status: int, code: str = "INVALID") -> HttpResponse:
    return _json({"errors": [{"message": message, "extensions": {"code": code}}]}, status)


def _text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "Strings must not contain NUL characters"
    if any("\ud800" <= char <= "\udfff" for char in value):
        return "Strings must be valid Unicode (a lone surrogate was sent)"
    return None


def _unusable_text(document, variables) -> str | None:
    """Text no database or client can hold (NUL, lone surrogates), in the document's string
    literals or in the variables: refused before anything runs (issue 9, hostile input)."""
    return _unusable_literal(document) or _unusable_variable(variables)


def _unusable_literal(document) -> str | None:
    for node in _string_literals(document):
        problem = _text_problem(node)
        if problem:
            return problem
    return None


def _unusable_variable(variables) -> str | None:
    stack: list = [variables] if variables else []
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            problem = _text_problem(value)
            if problem:
                return problem
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return None


def _string_literals(document):
    from graphql import StringValueNode, visit
    from graphql.language import Visitor

    found: list[str] = []

    class Strings(Visitor):
        def enter_string_value(self, node: StringValueNode, *_args):
            found.append(node.value)

    visit(document, Strings())
    return found


# --------------------------------------------------------------------------- documents
#
# Clients send the same few operations over and over, and parsing plus validating one is
# about 1 ms of every request (bench/api.py): the outcome is kept per query text, keyed by
# everything it depends on (schema, token limit, introspection allowed). Only documents that
# parse are kept; a kept AST is only read afterwards (execution does not change it). Bounded
# in entries and in the length of a query kept; longer ones are checked every time.
DOCUMENTS_CACHED = 256
DOCUMENT_MAX_CACHED_LENGTH = 20_000


@dataclass(frozen=True)
class _CheckedDocument:
    document: DocumentNode
    unusable_literal: str | None
    errors: tuple[GraphQLError, ...] | None  # validation errors; None: nested too deeply


def _check_document(schema, query: str, max_tokens: int, introspection: bool):
    """Parse (GraphQLError or RecursionError propagate) and validate one document."""
    document = parse(query, max_tokens=max_tokens)
    rules = list(specified_rules)
    if not introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    try:
        errors: tuple[GraphQLError, ...] | None = tuple(
            validate(schema, document, rules, max_errors=20)
        )
    except RecursionError:
        errors = None
    return _CheckedDocument(document, _unusable_literal(document), errors)


_check_document_cached = functools.lru_cache(maxsize=DOCUMENTS_CACHED)(_check_document)


def checked_document(schema, query: str) -> _CheckedDocument:
    check = _check_document_cached if len(query) <= DOCUMENT_MAX_CACHED_LENGTH else _check_document
    return check(schema, query, limit("MAX_TOKENS"), introspection_enabled())


def introspection_enabled() -> bool:
    return bool(settings.DEBUG or getattr(settings, "GRAPHQL_INTROSPECTION", False))


def graphiql_enabled() -> bool:
    return bool(settings.DEBUG or getattr(settings, "GRAPHIQL", False))


@method_decorator(csrf_exempt, name="dispatch")
class CoalitionGraphQLView(GraphQLView):
    """See the module docstring."""

    def dispatch(self, request, *args, **kwargs):
        request.coalition_request_id = _request_id(request)
        try:
            response = self._dispatch(request)
        except Exception:  # noqa: BLE001 - logged with the request id, answered generically
            logger.exception("request %s: unexpected error", request.coalition_request_id)
            response = _json(
                {
                    "errors": [
                        {
                            "message": "Internal server error",
                            "extensions": {
                                "code": "INTERNAL_ERROR",
                                "requestId": request.coalition_request_id,
                            },
                        }
                    ]
                },
                500,
            )
        response["X-Request-ID"] = request.coalition_request_id
        response["Cache-Control"] = "no-store"
        return response

    def _dispatch(self, request) -> HttpResponse:
        if request.method not in ("GET", "POST"):
            response = _failure("GraphQL is served over GET (queries) and POST", 405)
            response["Allow"] = "GET, POST"
            return response
        max_bytes = limit("MAX_BODY_BYTES")
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _failure("Invalid Content-Length", 400)
        if declared > max_bytes:
            return _failure(f"The request body exceeds {max_bytes} bytes", 413, "LIMIT_EXCEEDED")
        if request.method == "GET" and graphiql_enabled() and self.request_wants_html(request):
            self.graphiql = True
            return super().dispatch(request)
        try:
            body = request.body
        except RequestDataTooBig:
            return _failure(f"The request body exceeds {max_bytes} bytes", 413, "LIMIT_EXCEEDED")
        if len(body) > max_bytes:
            return _failure(f"The request body exceeds {max_bytes} bytes", 413, "LIMIT_EXCEEDED")
        params = self._params(request, body)
        if isinstance(params, HttpResponse):
            return params
        return self._run(request, **params)

    def _params(self, request, body: bytes):
        """query, variables and operationName from the query string or the body."""
        if request.method == "GET":
            data = {key: request.GET.get(key) for key in ("query", "variables", "operationName")}
            try:
                variables = json.loads(data["variables"]) if data["variables"] else None
            except ValueError:
                return _failure("variables must be a JSON object", 400)
            data["variables"] = variables
        else:
            content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
            if content_type == "application/graphql":
                data = {"query": body.decode("utf-8", "replace")}
            elif content_type in ("application/json", ""):
                try:
                    data = json.loads(body)
                except (ValueError, UnicodeDecodeError):
                    return _failure("The body is not valid JSON", 400)
                if isinstance(data, list):
                    return _failure("Batched requests are not supported: send one operation", 400)
                if not isinstance(data, dict):
                    return _failure("The body must be a JSON object", 400)
            else:
                return _failure("Send application/json", 415)
        query = data.get("query")
        variables = data.get("variables")
        operation_name = data.get("operationName")
        if not isinstance(query, str) or not query.strip():
            return _failure("Must provide a query string", 400)
        if variables is not None and not isinstance(variables, dict):
            return _failure("variables must be a JSON object", 400)
        if operation_name is not None and not isinstance(operation_name, str):
            return _failure("operationName must be a string", 400)
        return {"query": query, "variables": variables, "operation_name": operation_name}

    def _run(self, request, *, query, variables, operation_name) -> HttpResponse:
        schema = self.schema.graphql_schema
        try:
            checked = checked_document(schema, query)
        except GraphQLError as error:
            return _json({"errors": [error.formatted]}, 400)
        except RecursionError:
            return _failure("The document is nested too deeply", 400, "LIMIT_EXCEEDED")
        document = checked.document
        unusable = checked.unusable_literal or _unusable_variable(variables)
        if unusable is not None:
            return _failure(unusable, 400)
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            message = (
                f"Unknown operation named '{operation_name}'"
                if operation_name
                else "Must provide the operationName of the operation to run"
            )
            return _failure(message, 400)
        if request.method == "GET" and operation.operation != OperationType.QUERY:
            response = _failure(f"A {operation.operation.value} must be sent with POST", 405)
            response["Allow"] = "POST"
            return response
        if checked.errors is None:
            return _failure("The document is nested too deeply", 400, "LIMIT_EXCEEDED")
        errors = list(checked.errors)
        if not errors:
            errors = document_limits_check(schema, document, operation, variables)
        if errors:
            return _json({"errors": [error.formatted for error in errors]}, 400)

        principal = principal_of(request)  # resolved once, here, for the whole request
        if operation.operation == OperationType.QUERY:
            fragments = {
                definition.name.value: definition
                for definition in document.definitions
                if isinstance(definition, FragmentDefinitionNode)
            }
            for field_name in sorted(
                {field.name.value for field in root_fields(operation, fragments)}
            ):
                wait = rate_limit_hit(principal.rate_key, field_name)
                if wait is not None:
                    refusal = limit_error(f"Too many {field_name} requests; retry in {wait}s")
                    response = _json({"errors": [refusal.formatted]}, 429)
                    response["Retry-After"] = str(wait)
                    return response

        result = execute(
            schema,
            document,
            context_value=request,
            variable_values=variables,
            operation_name=operation_name,
        )
        payload = {}
        if result.errors:
            payload["errors"] = [self._format(request, error) for error in result.errors]
        status = 200
        if result.data is None and result.errors and not any(e.path for e in result.errors):
            status = 400  # variables that do not coerce: nothing ran
        else:
            payload["data"] = result.data
        return _json(payload, status)

    @staticmethod
    def _format(request, error: GraphQLError) -> dict:
        original = error.original_error
        if original is None or isinstance(original, GraphQLError):
            return error.formatted
        if isinstance(original, CoalitionError):
            formatted = error.formatted
            formatted.setdefault("extensions", {})["code"] = str(original.code)
            return formatted
        logger.error(
            "request %s: unexpected %s in %s",
            request.coalition_request_id,
            type(original).__name__,
            ".".join(str(part) for part in error.path or ()),
            exc_info=(type(original), original, original.__traceback__),
        )
        formatted = {
            "message": "Internal server error",
            "extensions": {"code": "INTERNAL_ERROR", "requestId": request.coalition_request_id},
        }
        if error.locations:
            formatted["locations"] = [location._asdict() for location in error.locations]
        if error.path:
            formatted["path"] = error.path
        return formatted

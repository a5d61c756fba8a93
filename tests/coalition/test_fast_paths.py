"""The usual-case shortcuts of the import path give what the full checks give: the same
values, the same errors (code, message, field), the same JSON."""

import json
from decimal import Decimal

import pytest

from coalition.errors import CoalitionError
from coalition.money import parse_amount
from coalition.services.batch import _copy_text, _json_dumps
from coalition.services.posting import MAX_TEXT_LENGTH, validate_text

TEXTS = [
    None,
    "",
    " ",
    "\t\n",
    "a",
    " a ",
    "x" * MAX_TEXT_LENGTH,
    "x" * (MAX_TEXT_LENGTH + 1),
    "a\x00b",
    "\u00e9t\u00e9",
    "\u2003",
    5,
    b"bytes",
]


def _outcome(call):
    try:
        return ("ok", call())
    except CoalitionError as error:
        return ("error", error.code, error.message, error.field)


@pytest.mark.parametrize("value", TEXTS)
@pytest.mark.parametrize("required", [False, True])
def test_validate_text_accepts_and_refuses_as_its_checks_say(value, required):
    outcome = _outcome(lambda: validate_text(value, field="f", required=required))
    ok = (
        isinstance(value, str | type(None))
        and not (required and not (value or "").strip())
        and len(value or "") <= MAX_TEXT_LENGTH
        and "\x00" not in (value or "")
    )
    assert (outcome[0] == "ok") is ok
    if ok:
        assert outcome[1] == (value or "")


@pytest.mark.parametrize(
    "value,currency",
    [("12.34", "USD"), ("12.340", "USD"), ("12.345", "USD"), ("7", "JPY"), ("7.5", "JPY"),
     (Decimal("1.2"), "USD"), (3, "USD"), ("1e2", "USD"), ("abc", "USD"), ("NaN", "USD"),
     ("1.2345", "KWD")],
)  # fmt: skip
def test_parse_amount(value, currency):
    expected_ok = {
        ("12.34", "USD"): Decimal("12.34"),
        ("12.340", "USD"): Decimal("12.340"),
        ("7", "JPY"): Decimal("7"),
        (Decimal("1.2"), "USD"): Decimal("1.2"),
        (3, "USD"): Decimal("3"),
        ("1e2", "USD"): Decimal("1e2"),
    }
    key = (value, currency)
    if key in expected_ok:
        assert parse_amount(value, currency) == expected_ok[key]
    else:
        with pytest.raises(ValueError):
            parse_amount(value, currency)


@pytest.mark.parametrize(
    "value",
    [
        {},
        [],
        {"a": 1, "b": [1, "x", None, True], "c": {"d": '\u00e9\n\t\\"', "e": 1.5}},
        {"breakdown": [{"kind": "base", "points": 3, "promotionId": None}], "store": None},
    ],
)
def test_json_dumps_is_json_dumps(value):
    assert _json_dumps(value) == json.dumps(value, ensure_ascii=False)


def test_json_dumps_refuses_what_json_refuses_and_recovers():
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(ValueError):
        _json_dumps(circular)
    with pytest.raises(TypeError):
        _json_dumps({"when": object()})
    shared = {"x": 1}
    assert _json_dumps([shared, shared]) == '[{"x": 1}, {"x": 1}]'
    assert _copy_text({"a": "b\\c"}) == '{"a": "b\\\\\\\\c"}'

"""`{{ amount|money:currency }}`: an amount shown with its currency's minor-unit places."""

from decimal import Decimal

from django import template

from coalition.money import round_money

register = template.Library()


@register.filter
def money(amount, currency: str) -> str:
    if amount is None or amount == "":
        return ""
    return f"{round_money(Decimal(amount), currency or 'USD')} {currency}".strip()

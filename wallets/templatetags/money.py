from django import template

from wallets.money import format_money

register = template.Library()


@register.filter
def money(amount: int, currency: str) -> str:
    """{{ wallet.balance|money:wallet.currency }} -> 987.50 CNY"""
    return format_money(amount, currency)


@register.filter
def signed_money(amount: int, currency: str) -> str:
    return format_money(amount, currency, signed=True)

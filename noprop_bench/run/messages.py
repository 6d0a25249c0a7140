"""How an exception reads on one line of a ledger, a summary or a warning (its traceback goes elsewhere)."""
from __future__ import annotations


def first_line(error: BaseException) -> str:
    """`Type: first line of the message`, or `Type` alone when the message is empty."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__

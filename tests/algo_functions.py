"""Plain functions the algorithm tests serve (`pellucid runner start tests/algo_functions.py:apply`)."""

from __future__ import annotations

from typing import Any


def apply(input: Any) -> Any:
    """Echoes each kind back changed, so a test sees the function ran: text -> "Hello <text>",
    bytes -> reversed, JSON -> {"echo": input, "kind": <type name>}. "boom" raises; "print" prints;
    {"insights": {...}} reports them for this call."""
    if input == "boom":
        return explode(input)
    if input == "print":
        print("printed by the algorithm")
        print("second line")
        return "done"
    if isinstance(input, str):
        return f"Hello {input}"
    if isinstance(input, bytes):
        return input[::-1]
    if isinstance(input, dict) and "insights" in input:
        import pellucid

        pellucid.client().report_insights(input["insights"])
        return {"reported": sorted(input["insights"])}
    return {"echo": input, "kind": type(input).__name__}


def explode(value: str) -> str:
    raise ValueError(f"cannot handle {value}")

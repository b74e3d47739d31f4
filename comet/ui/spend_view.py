"""Spend on every page: the estimated cost beside Generate, and what the limits leave."""

from __future__ import annotations

from typing import Any

import streamlit as st

from comet import prices
from comet.store import HistoryError
from comet.ui.context import Connection, current_user


def cost_caption(conn: Connection, outgoing: list[tuple[str, dict[str, Any]]]) -> None:
    """The estimated cost of what Generate would send (the total of a compare), how it was reached."""
    estimates = [conn.estimate(model_id, body) for model_id, body in outgoing]
    total = prices.total(estimates)
    if total is None:
        st.caption(":material/payments: Estimated cost: unknown for this model (no price in the list).")
        return
    basis = " · ".join(e.basis for e in estimates if e)
    st.caption(f":material/payments: Estimated cost: **{prices.usd(total)}**" + (" in total" if len(outgoing) > 1 else ""),
               help=f"{basis}. An estimate from the price list (operators set real prices in [prices]); "
                    "CometAPI's bill is what counts.")


def sidebar_left(conn: Connection) -> None:
    """What the spending limits leave, when any is set."""
    if not conn.limits.any:
        return
    try:
        left = conn.ledger.left(current_user(), conn.limits)
    except HistoryError:
        st.caption(":material/savings: Spending limits: cannot be read right now.")
        return
    lines = []
    if left.monthly is not None:
        lines.append(f"{prices.usd(max(left.monthly, 0.0))} of {prices.usd(conn.limits.monthly)} left this month")
    if left.daily is not None:
        lines.append(f"{prices.usd(max(left.daily, 0.0))} of {prices.usd(conn.limits.daily_per_person)} left for you today")
    st.caption(":material/savings: " + " · ".join(lines) + " (UTC, estimates)")

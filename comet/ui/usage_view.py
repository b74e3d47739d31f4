"""Usage page pieces: a period, the spend in it by day (stacked by model), by person and by model,
and the table behind the charts as CSV. Aggregated in SQL (comet.ledger); pandas only pivots the
few grouped rows. Every amount is an estimate from the price rules."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import streamlit as st

from comet import export
from comet.ledger import Ledger
from comet.prices import usd
from comet.ui import card

PERIODS = ("Today", "This week", "This month", "Custom")
PERIOD_KEY = "usage.period"
RANGE_KEY = "usage.range"


def period(today: date | None = None) -> tuple[date, date]:
    """The chosen period as (first day, last day), UTC."""
    today = today or datetime.now(UTC).date()
    chosen = st.segmented_control("Period", PERIODS, default="This month", key=PERIOD_KEY)
    if chosen == "Today":
        return today, today
    if chosen == "This week":
        return today - timedelta(days=today.weekday()), today
    if chosen == "Custom":
        picked = st.date_input("From – to (UTC)", value=(today.replace(day=1), today), key=RANGE_KEY,
                               max_value=today + timedelta(days=1))
        if isinstance(picked, (tuple, list)) and len(picked) == 2:
            return picked[0], picked[1]
        st.caption("Pick the last day of the period too.")
        first = picked[0] if isinstance(picked, (tuple, list)) and picked else today
        return first, first
    return today.replace(day=1), today


def report(ledger: Ledger, first: date, last: date) -> None:
    usage = ledger.usage(first, last)
    spent, images = float(usage["usd"].sum()), int(usage["images"].sum())
    people = usage["person"].nunique()
    a, b, c = st.columns(3)
    a.metric("Estimated spend", usd(spent))
    b.metric("Images", f"{images:,}")
    c.metric("People", f"{people:,}")
    st.caption(f"{first:%d %b %Y} – {last:%d %b %Y} (UTC). Amounts are estimates from the price list "
               "(Settings: [prices]); CometAPI's bill is what counts. Failed, canceled and aborted runs are not counted.")
    if usage.empty:
        st.info("Nothing was spent in this period.", icon=":material/savings:")
        return
    usage = usage.assign(model=usage["model"].map(card.model_title))
    st.subheader("By day")
    days = pd.date_range(first, last, freq="D").strftime("%Y-%m-%d")
    by_day = usage.pivot_table(index="day", columns="model", values="usd", aggfunc="sum", fill_value=0.0)
    by_day = by_day.reindex(days, fill_value=0.0).reset_index(names="day").melt("day", var_name="model", value_name="usd")
    st.bar_chart(by_day, x="day", y="usd", color="model", stack=True, x_label="Day (UTC)", y_label="USD")
    person_column, model_column = st.columns(2)
    with person_column:
        st.subheader("By person")
        st.dataframe(_totals(usage, "person"), hide_index=True, column_config=_money_columns("Person"))
    with model_column:
        st.subheader("By model")
        st.dataframe(_totals(usage, "model"), hide_index=True, column_config=_money_columns("Model"))
    table = usage[["day", "person", "model", "predictions", "succeeded", "images", "usd"]]
    st.download_button("Export the table as CSV", data=export.spreadsheet_csv(table),
                       file_name=f"comet-usage-{first}-{last}.csv", mime="text/csv", icon=":material/table:",
                       on_click="ignore")


def _totals(usage: pd.DataFrame, by: str) -> pd.DataFrame:
    grouped = usage.groupby(by, as_index=False)[["usd", "images", "predictions"]].sum()
    return grouped.sort_values("usd", ascending=False)


def _money_columns(label: str) -> dict:
    return {
        "person": st.column_config.TextColumn(label),
        "model": st.column_config.TextColumn(label),
        "usd": st.column_config.NumberColumn("Estimated USD", format="$%.4f"),
        "images": st.column_config.NumberColumn("Images"),
        "predictions": st.column_config.NumberColumn("Runs"),
    }

"""How a prediction's status looks wherever it is shown: the card's badge, the gallery's links and
the History table's coloured label all read it from here, so a status never looks different in
two places."""

from __future__ import annotations

from comet.prediction import ABORTED, CANCELED, FAILED, PROCESSING, STARTING, SUCCEEDED

# status -> (badge colour, icon)
STATUS_STYLE = {
    STARTING: ("gray", ":material/hourglass_top:"),
    PROCESSING: ("blue", ":material/autorenew:"),
    SUCCEEDED: ("green", ":material/check_circle:"),
    FAILED: ("red", ":material/error:"),
    CANCELED: ("gray", ":material/cancel:"),
    ABORTED: ("orange", ":material/block:"),
}
UNKNOWN_STYLE = ("violet", ":material/help:")  # a status the API made up: shown, but marked odd

# The badge colours as CSS, for the table (a column takes CSS colours, not st.badge's names).
_BADGE_CSS = {"gray": "#8a8aa3", "blue": "#1c83e1", "green": "#21a354", "red": "#e0403a", "orange": "#e8833a"}
# status -> its label's colour in the History table; an unknown status stays plain there.
TABLE_COLORS = {status: _BADGE_CSS[color] for status, (color, _icon) in STATUS_STYLE.items()}


def style(status: str) -> tuple[str, str]:
    """(badge colour, icon) of a status, known or not."""
    return STATUS_STYLE.get(status, UNKNOWN_STYLE)

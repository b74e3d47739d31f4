"""Text from users and the API is shown as text: no HTML, no markdown links, no formatting."""

from __future__ import annotations

import re

# Every character that markdown (CommonMark + GitHub extensions) or Streamlit's directives
# (colours, :material: icons) would interpret.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$=&])")


def plain(text: object, limit: int = 2000) -> str:
    """Escape untrusted text for st.markdown / st.error / st.caption, trimmed to `limit`."""
    value = str(text)
    if len(value) > limit:
        value = value[:limit] + "…"
    return _SPECIAL.sub(r"\\\1", value).replace("\n", "  \n")

"""Text from users and the API is shown as text: no HTML, no markdown links, no formatting."""

from __future__ import annotations

import re

# Every character that markdown (CommonMark + GitHub extensions) or Streamlit's directives
# (colours, :material: icons) would interpret.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$=&])")
# GFM autolink literals (remark-gfm) are found in the text *after* backslash escapes are resolved,
# so `https\://x\.y` still becomes a link. An invisible U+2060 WORD JOINER breaks each pattern it
# looks for: between a scheme and its ":" (http, https, mailto, xmpp), between "www" and ".", and
# before every "@" (an e-mail address needs word characters right before it).
WORD_JOINER = "\u2060"
_SCHEME = re.compile(r"(https?|mailto|xmpp)(?=:)", re.IGNORECASE)
_WWW = re.compile(r"(www)(?=\.)", re.IGNORECASE)


def plain(text: object, limit: int = 2000) -> str:
    """Escape untrusted text for st.markdown / st.error / st.caption / st.badge / page_link
    labels, trimmed to `limit`: it shows literally, with no formatting, no HTML and no links."""
    value = str(text)
    if len(value) > limit:
        value = value[:limit] + "…"
    value = _SCHEME.sub(r"\1" + WORD_JOINER, value)
    value = _WWW.sub(r"\1" + WORD_JOINER, value)
    value = value.replace("@", WORD_JOINER + "@")
    return _SPECIAL.sub(r"\\\1", value).replace("\n", "  \n")


def badge_label(text: object, limit: int = 40) -> str:
    """plain() for st.badge, which escapes [ and ] itself (its label sits inside a
    `:color-badge[...]` directive): escaped twice they would end the badge early."""
    return plain(text, limit).replace("\\[", "[").replace("\\]", "]")

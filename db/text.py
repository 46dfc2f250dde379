"""What counts as visible text: one character class for the API's checks and the database's.

A name, a title or a comment made only of white space or invisible format characters (zero
width spaces and joiners, direction marks, the byte-order mark, the soft hyphen) is blank.
The class is written so that Python's ``re`` and PostgreSQL's regular expressions read it the
same way (``\\uXXXX`` escapes, no locale-dependent classes such as ``\\s``); migration 17 builds
the database's ``app_has_visible_text()`` from it and ``api.validation`` its blank check.
"""

from __future__ import annotations

import re

INVISIBLE_CLASS = (
    r"[\t\n\u000b\f\r \u0085\u00a0\u00ad\u1680\u180e\u2000-\u200f\u2028-\u202f"
    r"\u205f-\u2064\u3000\ufeff]"
)
_INVISIBLE = re.compile(INVISIBLE_CLASS)


def has_visible_text(value: str) -> bool:
    """True when ``value`` holds at least one character that is not blank or invisible."""
    return _INVISIBLE.sub("", value) != ""

"""Agent names, the NLRI of agentmesh (DESIGN §2).

A name is dotted labels of `[A-Za-z0-9_-]`, compared exactly and case-preserving:
`acme.weather.forecast`. An aggregate `acme.weather.*` covers every name below `acme.weather`.
Checks run over a whole UPDATE at once: one regular expression over the joined names, so a
well-formed batch costs one C-level scan rather than a Python call per name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MAX_NAME_LENGTH = 255
_LABEL = r"[A-Za-z0-9_-]+"
_NAME = rf"{_LABEL}(?:\.{_LABEL})*(?:\.\*)?"
_ONE = re.compile(_NAME)
# Names joined by newlines; `\Z` rather than `$` so a trailing newline cannot sneak through.
_MANY = re.compile(rf"(?:{_NAME}\n)*{_NAME}\Z")

AGGREGATE_SUFFIX = ".*"


def is_valid(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and _ONE.fullmatch(name) is not None


def invalid_names(names: Sequence[str]) -> list[str]:
    """The names that break the grammar; empty for a well-formed batch (the common case)."""
    if not names:
        return []
    joined = "\n".join(names)
    # The newline count rules out a name that itself holds a newline posing as two names.
    if (
        _MANY.match(joined) is not None
        and joined.count("\n") == len(names) - 1
        and max(map(len, names)) <= MAX_NAME_LENGTH
    ):
        return []
    return [name for name in names if not is_valid(name)]


def is_aggregate(name: str) -> bool:
    return name.endswith(AGGREGATE_SUFFIX)


def covering_aggregates(name: str) -> Iterable[str]:
    """Aggregates that cover `name`, longest first: a.b.c -> a.b.*, a.* (longest-prefix match order)."""
    base = name[: -len(AGGREGATE_SUFFIX)] if is_aggregate(name) else name
    end = len(base)
    while (end := base.rfind(".", 0, end)) > 0:
        yield base[:end] + AGGREGATE_SUFFIX

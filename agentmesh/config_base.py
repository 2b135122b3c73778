"""What every configuration model shares: strict models, problems reported at sub-locations, and
the expansion of environment references (`${VAR}`) in the values of a configuration file.

`agentmesh.config` builds the node configuration from these, and so do the sections defined in
their own modules (`policy_config`, `access_config`), which `config` imports: keeping the base
here lets those modules use it without importing `config` itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

#: A location inside the configuration, such as ("neighbors", 1, "asn").
Location = tuple[str | int, ...]


class Problems(ValueError):
    """Raised by cross-field validators to report problems at precise sub-locations.

    Pydantic would attribute a plain ``ValueError`` from a model validator to the model as a
    whole; this carries ``(relative location, message)`` pairs instead, which the configuration's
    error conversion unpacks into one problem per location.
    """

    def __init__(self, items: Sequence[tuple[Location, str]]) -> None:
        super().__init__("; ".join(message for _, message in items))
        self.items = tuple(items)


class ConfigModel(BaseModel):
    """Strict and frozen; unknown keys are errors; `null` for an optional key means its default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        # YAML writes "key:" with no value as null; for an optional key that means the default,
        # exactly as if the key were absent. Keys are matched as written in YAML (the alias).
        if not isinstance(data, dict):
            return data
        optional = {
            field.alias or name for name, field in cls.model_fields.items() if not field.is_required()
        }
        return {key: value for key, value in data.items() if not (value is None and key in optional)}


# --------------------------------------------------------------------------- environment references

#: `$$`, or `${` up to the next `}` (a missing `}` leaves `close` empty).
_REFERENCE_RE = re.compile(r"\$\$|\$\{(?P<body>[^}]*)(?P<close>\}?)")
_VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand_string(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """`text` with `${VAR}`, `${VAR:-default}` and `$$` replaced; also what was wrong with them.

    `${VAR:-default}` takes the default when VAR is unset or empty, as a POSIX shell does; the
    default is used as written, not expanded again. `$$` is a literal `$`; a `$` followed by
    anything else stays as it is, so most values that contain `$` need no escaping.
    """
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        body = match.group("body")
        if not match.group("close"):
            problems.append(f"'${{{body}' has no closing '}}' (write $$ for a literal $)")
            return ""
        name, has_default, default = body.partition(":-")
        if not _VARIABLE_RE.fullmatch(name):
            problems.append(
                f"'${{{body}}}': {name!r} is not an environment variable name"
                " (letters, digits and '_', not starting with a digit)"
            )
            return ""
        value = environ.get(name)
        if has_default:
            return value or default
        if value is None:
            problems.append(
                f"environment variable {name} is not set (give a default with ${{{name}:-default}})"
            )
            return ""
        return value

    expanded = _REFERENCE_RE.sub(replace, text)
    return expanded, problems


def expand_environment(data: Any, environ: Mapping[str, str]) -> tuple[Any, list[tuple[Location, str]]]:
    """Expand environment references in every string value of parsed YAML (mapping keys stay as written).

    Returns the expanded data and the problems found, each at the location of its value.
    Expansion runs before validation, so an expanded value is still a string: `asn: ${ASN}` is a
    string, which the strict models refuse where an integer is expected.
    """
    problems: list[tuple[Location, str]] = []

    def walk(value: Any, location: Location) -> Any:
        if isinstance(value, str):
            expanded, found = expand_string(value, environ)
            problems.extend((location, message) for message in found)
            return expanded
        if isinstance(value, dict):
            return {key: walk(item, (*location, str(key))) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*location, index)) for index, item in enumerate(value)]
        return value

    return walk(data, ()), problems

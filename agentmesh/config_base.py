"""What every configuration model shares: strict models, and problems reported at sub-locations.

`agentmesh.config` builds the node configuration from these, and so do the sections defined in
their own modules (`policy_config`, `access_config`), which `config` imports: keeping the base
here lets those modules use it without importing `config` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
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

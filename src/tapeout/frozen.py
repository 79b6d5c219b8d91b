"""`Frozen`: the base of every typed schema (specs, model configs, case and demand files): frozen,
unknown keys refused, defaults validated, no infinite or NaN number accepted."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=False, validate_default=True, allow_inf_nan=False
    )

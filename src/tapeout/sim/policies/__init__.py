"""Scheduling policies of the serving simulator, registered here and only here."""

from __future__ import annotations

from tapeout.sim.policies.base import PolicyFactory
from tapeout.sim.policies.continuous import Continuous
from tapeout.sim.policies.disaggregated import Disaggregated

POLICIES: dict[str, PolicyFactory] = {
    "continuous": Continuous,
    "disaggregated": Disaggregated,
}

"""Fleet planning: the fleet of lowest TCO that meets a set of serving, recsys and training
demands (`tapeout plan DEMAND.yaml`)."""

from tapeout.plan.demand import DemandFile, load_demand, parse_demand
from tapeout.plan.fleet import FleetPlan, plan

__all__ = ["DemandFile", "FleetPlan", "load_demand", "parse_demand", "plan"]

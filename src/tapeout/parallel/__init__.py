"""Parallel plans: how a workload is split across chips."""

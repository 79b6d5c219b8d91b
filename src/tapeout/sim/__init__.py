"""Simulators: LLM inference and serving."""

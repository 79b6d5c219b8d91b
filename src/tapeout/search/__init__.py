"""Searches, kept apart from the models they search: the training plan search, the serving rate
that meets latency limits (and the replica width that serves most per chip), the recommendation
rate under a p99 limit. Each takes a budget or a resolution and reports what it tried."""

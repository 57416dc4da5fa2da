"""Prometheus metrics: the master's series, the workers' merged, the endpoint."""

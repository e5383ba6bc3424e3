"""Metrics and log context shared by every CoffeeBus process (docs/observability.md).

This package sits below everything else (it imports only `prometheus_client`), so the bus,
the gate and the consumers can all record into it without depending on each other.
"""

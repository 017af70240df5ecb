"""Backends: turn an optimized graph / fused Schedule into something that runs."""

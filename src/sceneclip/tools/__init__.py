"""Tooling for one machine: vector files (geopandas), the store builder, batch, local invoke, demo. No click."""

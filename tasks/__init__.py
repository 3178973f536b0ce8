"""Prefect tasks: thin wrappers that call shrinkflow's plain functions and pass small references."""

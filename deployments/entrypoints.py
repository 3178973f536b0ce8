"""The flows as deployments load them (the entrypoints of deployments/prefect.yaml and of `shrinkflow serve`): an
entry point of its own, so it sets the process's library settings (shrinkflow.core.runtime) before anything uses
them, as the command does."""

from shrinkflow.core.runtime import configure_libraries

configure_libraries()

from shrinkflow.flows.pipeline import pipeline  # noqa: E402  (after the settings, which the flows' libraries read)
from shrinkflow.flows.sweep import sweep  # noqa: E402

__all__ = ["pipeline", "sweep"]

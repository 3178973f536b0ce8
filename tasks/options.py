"""Task options shared by the stages."""

from typing import Any

from prefect.cache_policies import NO_CACHE

from shrinkflow.core.errors import UserError
from shrinkflow.tasks.caching import StageInputs


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O and tracking hiccups, never a user error: bad data stays bad on a second try."""
    return not isinstance(state.data, UserError)


# The stages: cached by their inputs (tasks.caching); a stage that fails is not retried (the run reports it).
CACHED_TASK: dict[str, Any] = {"cache_policy": StageInputs(), "persist_result": True}
# Tracking and other I/O: retried, never cached.
IO_TASK: dict[str, Any] = {
    "retries": 2, "retry_delay_seconds": 2, "retry_condition_fn": retry_unless_user_error, "cache_policy": NO_CACHE,
}
# The steps of the flow's shipment transaction (register, export, gate, report, finish). Never retried:
# Prefect rolls back the enclosing transaction when any attempt fails, even one a retry would have mended,
# and a rolled-back shipment must not be followed by a run that completes.
SHIPPING_TASK: dict[str, Any] = {"cache_policy": NO_CACHE}

"""Task options shared by the stages."""

from typing import Any

from prefect.cache_policies import NO_CACHE

from shrinkflow.errors import UserError


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O and tracking hiccups, never a user error: bad data stays bad on a second try."""
    return not isinstance(state.data, UserError)


# Runs are cached explicitly per stage where that is wanted, never by Prefect's default policy.
IO_TASK = {"retries": 2, "retry_delay_seconds": 2, "retry_condition_fn": retry_unless_user_error, "cache_policy": NO_CACHE}
COMPUTE_TASK = {"cache_policy": NO_CACHE}

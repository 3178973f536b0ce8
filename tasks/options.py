"""Task options shared by the stages."""

from typing import Any

from prefect.cache_policies import NO_CACHE

from shrinkflow.core.errors import UserError


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O and tracking hiccups, never a user error: bad data stays bad on a second try."""
    return not isinstance(state.data, UserError)


def cache_key_parameter(context: Any, parameters: dict[str, Any]) -> str:
    """The flow computes each stage's key (tasks.caching) and passes it in as `cache_key`."""
    return parameters["cache_key"]


# Tracking and other I/O: retried, never cached.
IO_TASK = {"retries": 2, "retry_delay_seconds": 2, "retry_condition_fn": retry_unless_user_error, "cache_policy": NO_CACHE}
# The steps of the flow's shipment transaction (register, export, gate, report, finish). Never retried:
# Prefect rolls back the enclosing transaction when any attempt fails, even one a retry would have mended,
# and a rolled-back shipment must not be followed by a run that completes.
SHIPPING_TASK = {"cache_policy": NO_CACHE}
# Stages whose outputs later runs may reuse: the result (a small reference) is persisted under the key.
CACHED_TASK = {"cache_key_fn": cache_key_parameter, "persist_result": True}
# Everything else runs every time.
COMPUTE_TASK = {"cache_policy": NO_CACHE}

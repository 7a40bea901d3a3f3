"""The registration lifecycle as one table: state + event -> next state.

States follow the spec's registration plus bgfetch's transfer view:

    pending --start--> fetching --succeed--> done (result "success")
       ^                  |  \\--fail-----> done (result "failure", failureReason)
       |                pause
       |                  v
       +----retry----- paused
    pending/fetching/paused --abort--> done (failure, "aborted")
    pending/fetching/paused --fail---> done (failure, the reason)
    pending/fetching/paused --hold---> paused   (a pause held in memory, written at last)
    pending/fetching/paused --requeue-> pending (start-up: every active one runs again)

A transition that the table does not hold raises `LifecycleError`. `step` is the one function
storage applies inside its transaction.
"""

from vocabulary import ACTIVE, FAILURE_REASONS

TRANSITIONS: dict[tuple[str, str], str] = {
    ("pending", "start"): "fetching",
    ("fetching", "pause"): "paused",
    ("paused", "retry"): "pending",
    ("fetching", "succeed"): "done",
    **{(state, "fail"): "done" for state in ACTIVE},
    **{(state, "abort"): "done" for state in ACTIVE},
    **{(state, "hold"): "paused" for state in ACTIVE},
    **{(state, "requeue"): "pending" for state in ACTIVE},
}


EVENT_OF = {"succeed": "success", "fail": "fail", "abort": "abort"}  # the event subscribers hear of an ending


class LifecycleError(Exception):
    """The event is not allowed in the registration's current state."""


def next_state(state: str, event: str) -> str:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LifecycleError(f"cannot {event} a registration that is {state}") from None


def outcome(event: str, reason: str = "") -> tuple[str, str]:
    """The spec's (result, failureReason) after `event`."""
    if event == "succeed":
        return "success", ""
    if event == "abort":
        return "failure", "aborted"
    if event == "fail":
        if reason not in FAILURE_REASONS:
            raise LifecycleError(f"unknown failure reason {reason!r}")
        return "failure", reason
    return "", ""


def step(state: str, event: str, reason: str = "") -> tuple[str, str, str]:
    """(next state, result, failureReason) of `event` in `state`; LifecycleError if not allowed."""
    return (next_state(state, event), *outcome(event, reason))

"""Update states, events and the one transition table.

State values are written to the journal and sent on the wire: they never change. Every
legal move is a row of :data:`TRANSITIONS`; anything else is a bug and raises. Resume
after a crash is another table, :data:`RESUME`, from the last persisted state to the
safe state to re-enter.
"""

from __future__ import annotations

from enum import StrEnum

from common.update_states import UpdateState

State = UpdateState
"""The agent's name for :class:`common.update_states.UpdateState` (journal and wire values)."""


class Event(StrEnum):
    """What a state's step produced."""

    START = "start"
    DOWNLOADED = "downloaded"
    VERIFIED = "verified"
    INSTALLED = "installed"
    PASSED = "passed"
    COMMITTED = "committed"
    FAIL = "fail"
    ROLLED_BACK = "rolled_back"
    REPORTED = "reported"


class InvalidTransition(RuntimeError):  # noqa: N818 - reads as "an invalid transition happened"
    """A (state, event) pair that is not in the table: a programming error, never bad input."""


PRE_COMMIT: frozenset[State] = frozenset({State.DOWNLOAD, State.VERIFY, State.INSTALL, State.BENCHMARK})
"""States whose failure rolls back; after COMMIT there is no way back."""

TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.IDLE, Event.START): State.DOWNLOAD,
    (State.DOWNLOAD, Event.DOWNLOADED): State.VERIFY,
    (State.VERIFY, Event.VERIFIED): State.INSTALL,
    (State.INSTALL, Event.INSTALLED): State.BENCHMARK,
    (State.BENCHMARK, Event.PASSED): State.COMMIT,
    (State.COMMIT, Event.COMMITTED): State.IDLE,
    **{(s, Event.FAIL): State.ROLLBACK for s in PRE_COMMIT},
    (State.ROLLBACK, Event.ROLLED_BACK): State.FAILURE,
    (State.FAILURE, Event.REPORTED): State.IDLE,
}

RESUME: dict[State, State] = {
    State.IDLE: State.IDLE,
    State.DOWNLOAD: State.DOWNLOAD,  # chunks on disk are re-checked; only missing ones are requested
    State.VERIFY: State.VERIFY,  # redo from the downloaded files
    State.INSTALL: State.VERIFY,  # a half-written slot is never trusted: verify downloads, install again
    State.BENCHMARK: State.BENCHMARK,  # re-benchmark the installed candidate
    State.COMMIT: State.COMMIT,  # finish the commit (idempotent)
    State.ROLLBACK: State.ROLLBACK,  # finish the rollback (idempotent)
    State.FAILURE: State.ROLLBACK,  # make sure the rollback completed, then report again
}


def next_state(state: State, event: Event) -> State:
    """Look up a transition.

    Example:
        >>> next_state(State.BENCHMARK, Event.FAIL)
        <State.ROLLBACK: 'rollback'>
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"no transition from {state.value!r} on {event.value!r}") from None


def resume_state(persisted: str) -> State:
    """Where to go after a restart, given the last persisted state (unknown values roll back).

    Example:
        >>> resume_state("install")
        <State.VERIFY: 'verify'>
    """
    try:
        return RESUME[State(persisted)]
    except ValueError:
        return State.ROLLBACK

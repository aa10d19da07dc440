"""Login throttling: failed sign-ins counted per client address and per user name.

Both keys count every failure; once either reaches `max_failures` within `window_s` it is
blocked for `block_s`, and each further block of that key doubles, up to `max_block_s`. While a
key is blocked a sign-in is refused (429) before any password is checked, so a flood costs one
small read per request, not a scrypt. Counting the user name too stops a guesser that rotates
addresses; counting the address stops one that rotates user names.

The state lives in the database (`login_throttle`), not in process memory: every HTTP worker
and every control-plane instance then enforces the same limit, and a restart forgets nothing.
An admitted attempt costs one short write before the password check (never during it); a
refused one only a read.

`next_state` is the whole policy as a pure function of (state, now), so it is tested over hours
of simulated time in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .config import LoginThrottle
from .models import LoginThrottle as ThrottleRow

KEY_LENGTH = 200


@dataclass(frozen=True)
class KeyState:
    failures: int
    window_start: datetime
    strikes: int
    blocked_until: datetime | None
    updated_at: datetime

    @classmethod
    def fresh(cls, now: datetime) -> KeyState:
        return cls(0, now, 0, None, now)


def keys(address: str | None, username: str) -> tuple[str, str]:
    """The two throttle keys of one attempt: its client address and the user name it tried."""
    return (f"addr:{address or 'unknown'}"[:KEY_LENGTH], f"user:{username}"[:KEY_LENGTH])


def aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; they are UTC by construction."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def seconds_blocked(state: KeyState | None, now: datetime) -> float:
    """How long `state` still refuses sign-ins (0 when it does not)."""
    if state is None or state.blocked_until is None:
        return 0.0
    return max(0.0, (aware(state.blocked_until) - now).total_seconds())


def next_state(state: KeyState | None, policy: LoginThrottle, now: datetime) -> KeyState:
    """The state after one more failure at `now`."""
    if state is None or (now - aware(state.updated_at)).total_seconds() >= policy.forget_s:
        state = KeyState.fresh(now)
    if (now - aware(state.window_start)).total_seconds() >= policy.window_s:
        state = replace(state, failures=0, window_start=now)
    failures = state.failures + 1
    if failures < policy.max_failures:
        return replace(state, failures=failures, updated_at=now)
    block = min(policy.block_s * 2**state.strikes, policy.max_block_s)
    until = now + timedelta(seconds=block)
    # The next window opens when the block ends: failures cannot be counted while blocked.
    return KeyState(0, until, state.strikes + 1, until, now)


def retry_after(session: Session, throttle_keys: tuple[str, ...], now: datetime) -> float:
    """Seconds until every key of an attempt is unblocked (0: it may proceed)."""
    rows = session.scalars(select(ThrottleRow).where(ThrottleRow.key.in_(throttle_keys)))
    return max((seconds_blocked(_state(row), now) for row in rows), default=0.0)


@dataclass(frozen=True)
class Admission:
    """The throttle's answer to one attempt. `retry_after` > 0: refused, nothing counted.
    Otherwise the attempt is already counted as a failure: `previous` holds each key's state
    before it (to undo on success) and `blocked` the keys it blocked, with the block's seconds.
    """

    retry_after: float
    previous: dict[str, KeyState]
    blocked: dict[str, float]


def admit(
    session: Session, policy: LoginThrottle, throttle_keys: tuple[str, ...], now: datetime
) -> Admission:
    """Count an attempt as a failure *before* its password is checked, or refuse it.

    Counting first is what makes the limit hold under concurrency: the rows are inserted if
    missing and locked (PostgreSQL row locks; SQLite's transactions hold the write lock), so
    of many attempts sent at once only `max_failures` are admitted; counting after the check
    would let every attempt in flight through. A success undoes its count (`succeeded`).
    """
    _prune(session, policy, now)
    _insert_missing(session, throttle_keys, now)
    query = select(ThrottleRow).where(ThrottleRow.key.in_(throttle_keys)).with_for_update()
    rows = list(session.scalars(query))
    previous = {row.key: _state(row) for row in rows}
    wait = max((seconds_blocked(state, now) for state in previous.values()), default=0.0)
    if wait > 0:
        return Admission(wait, {}, {})
    blocked = {}
    for row in rows:
        state = next_state(previous[row.key], policy, now)
        if state.strikes > row.strikes:
            blocked[row.key] = (state.blocked_until - now).total_seconds()
        _write(row, state)
    return Admission(0.0, previous, blocked)


def succeeded(session: Session, admission: Admission, user_key: str) -> None:
    """Undo a successful attempt's count: its user name starts over; every other key (the
    address) gets back the failure, and the block if this attempt caused one.

    The address is never reset outright: a guesser with one valid account of its own must
    not be able to clear its address's count between guesses at other accounts.
    """
    session.execute(delete(ThrottleRow).where(ThrottleRow.key == user_key))
    for key, before in admission.previous.items():
        row = None if key == user_key else session.get(ThrottleRow, key, with_for_update=True)
        if row is None:
            continue
        if key in admission.blocked:
            _write(row, before)  # nothing else was counted while the block stood
        else:
            row.failures = max(0, row.failures - 1)


def _prune(session: Session, policy: LoginThrottle, now: datetime) -> None:
    """Keys quiet for `forget_s` start over anyway: deleting them bounds the table."""
    cutoff = now - timedelta(seconds=policy.forget_s)
    stale = delete(ThrottleRow).where(ThrottleRow.updated_at < cutoff)
    # No in-session evaluation: SQLite's naive datetimes do not compare with `cutoff`.
    session.execute(stale.execution_options(synchronize_session=False))


def _insert_missing(session: Session, throttle_keys: tuple[str, ...], now: datetime) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    fresh = KeyState.fresh(now)
    values = [{"key": key, **_columns(fresh)} for key in dict.fromkeys(throttle_keys)]
    session.execute(insert(ThrottleRow).values(values).on_conflict_do_nothing())


def _state(row: ThrottleRow) -> KeyState:
    return KeyState(row.failures, row.window_start, row.strikes, row.blocked_until, row.updated_at)


def _columns(state: KeyState) -> dict[str, object]:
    return {
        "failures": state.failures,
        "window_start": state.window_start,
        "strikes": state.strikes,
        "blocked_until": state.blocked_until,
        "updated_at": state.updated_at,
    }


def _write(row: ThrottleRow, state: KeyState) -> None:
    for column, value in _columns(state).items():
        setattr(row, column, value)

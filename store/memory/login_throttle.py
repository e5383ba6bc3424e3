"""`LoginThrottle` in memory: the embedded process's, and the twin in the contract tests."""

from __future__ import annotations

from collections.abc import Sequence

from store.clock import Clock, SystemClock
from store.login_throttle import Subject, ThrottlePolicy, backoff_s


class MemoryLoginThrottle:
    """Failure counters in a dict (`store.login_throttle`); forgotten `window_s` after the
    last failure, as the Redis keys expire."""

    def __init__(self, policy: ThrottlePolicy | None = None, *, clock: Clock | None = None) -> None:
        self.policy = policy or ThrottlePolicy()
        self._clock = clock or SystemClock()
        # subject -> (failures, last failure ms, may try again at ms)
        self._state: dict[Subject, tuple[int, int, int]] = {}

    def _current(self, subject: Subject, now: int) -> tuple[int, int, int]:
        state = self._state.get(subject)
        if state is None or now - state[1] > self.policy.window_s * 1000:
            self._state.pop(subject, None)
            return (0, 0, 0)
        return state

    async def wait_s(self, subjects: Sequence[Subject]) -> float:
        now = self._clock.now_ms()
        until = max((self._current(s, now)[2] for s in subjects), default=0)
        return max(0, until - now) / 1000

    async def failed(self, subjects: Sequence[Subject]) -> float:
        now = self._clock.now_ms()
        longest = 0.0
        for subject in subjects:
            failures = self._current(subject, now)[0] + 1
            wait = backoff_s(failures, self.policy.free(subject.kind), self.policy)
            self._state[subject] = (failures, now, now + round(wait * 1000))
            longest = max(longest, wait)
        return longest

    async def succeeded(self, subject: Subject) -> None:
        self._state.pop(subject, None)

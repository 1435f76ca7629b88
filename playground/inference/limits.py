"""How much inference one user may hold at once.

Every generation a user starts (a compare stream, a chat completion) takes
one of their slots until it ends; with INFERENCE_MAX_CONCURRENT_PER_USER
taken, the next is refused (429) instead of queueing behind the others and
holding memory and a worker thread. Slots are counted in this process: with
several web processes, each counts its own.
"""

import threading
from collections import Counter

from django.conf import settings

_lock = threading.Lock()
_busy = Counter()  # user id -> generations running


class TooManyGenerations(Exception):
    def __init__(self, limit):
        self.limit = limit
        super().__init__(f"You already have {limit} generation{'s' if limit != 1 else ''} running, the most one "
                         f"user may run at once (INFERENCE_MAX_CONCURRENT_PER_USER={limit}); wait for one to "
                         "finish.")


class Slot:
    def __init__(self, user_id):
        self.user_id = user_id
        self.held = True

    def release(self):
        with _lock:
            if self.held:
                self.held = False
                _busy[self.user_id] -= 1
                if _busy[self.user_id] <= 0:
                    del _busy[self.user_id]


def take_slot(user):
    """One of the user's generation slots, or TooManyGenerations."""
    limit = settings.INFERENCE_MAX_CONCURRENT_PER_USER
    with _lock:
        if _busy[user.pk] >= limit:
            raise TooManyGenerations(limit)
        _busy[user.pk] += 1
    return Slot(user.pk)


def running(user):
    with _lock:
        return _busy.get(user.pk, 0)


class HeldStream:
    """An async stream that gives its slot back when it ends, fails, or its response is closed unread
    (Django closes a streaming response's content when the client goes away)."""

    def __init__(self, stream, slot):
        self.stream = stream
        self.slot = slot

    def __aiter__(self):
        return self._run()

    async def _run(self):
        try:
            async for item in self.stream:
                yield item
        finally:
            self.slot.release()

    def close(self):
        self.slot.release()

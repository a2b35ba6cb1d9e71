"""What the projection tells the API without polling: Postgres LISTEN on the projector's channels.

One thread per API process holds one connection that LISTENs on two channels:

- `FINISHED_CHANNEL` (payload: a requestId), NOTIFYed in the same transaction that writes a
  terminal status: callers waiting with `?wait=` register for an id before they check its row
  (no lost wake-up).
- `CHANGED_CHANNEL` (payload: the changed requests with their tenants, `projection.store`),
  NOTIFYed whenever a row changes: the console's live pages follow it through a `ChangeFeed`,
  which keeps only the requests its viewer may see.

A reconnect wakes every waiter and feed to re-check, since notifications sent meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import Callable

import psycopg
import sqlalchemy as sa

from projection.models import CHANGED_CHANNEL, FINISHED_CHANNEL
from projection.store import ChangedRequest, parse_changed

log = logging.getLogger("provisioning.api")


class ChangeFeed:
    """The changes one viewer may see, gathered until it takes them. Lives on its event loop:
    the listener thread hands it changes through `call_soon_threadsafe`."""

    def __init__(self, visible: Callable[[ChangedRequest], bool]) -> None:
        self._visible = visible
        self._changed: set[str] = set()
        self._everything = False
        self._ready = asyncio.Event()

    def offer(self, changes: list[ChangedRequest] | None) -> None:
        """`None`: anything may have changed (the listener reconnected)."""
        if changes is None:
            self._everything = True
        else:
            self._changed.update(c.request_id for c in changes if self._visible(c))
        if self._everything or self._changed:
            self._ready.set()

    async def wait(self, timeout_s: float) -> bool:
        """True once there are changes to take, False after `timeout_s` without."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def take(self) -> tuple[set[str], bool]:
        """The changed request ids since the last take, and whether anything may have."""
        changed, everything = self._changed, self._everything
        self._changed, self._everything = set(), False
        self._ready.clear()
        return changed, everything


class ProjectionListener:
    def __init__(self, database_url: str) -> None:
        url = sa.make_url(database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            defaultdict(set))
        self._feeds: set[tuple[asyncio.AbstractEventLoop, ChangeFeed]] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="projection-listener",
                                        daemon=True)

    def start(self) -> ProjectionListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=3)

    # --- callers waiting for one request to finish ------------------------------------------

    def register(self, request_id: str) -> asyncio.Event:
        woken = asyncio.Event()
        entry = (asyncio.get_running_loop(), woken)
        with self._lock:
            self._waiters[request_id].add(entry)
        return woken

    def unregister(self, request_id: str, woken: asyncio.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(request_id, set())
            waiters.difference_update({e for e in waiters if e[1] is woken})
            if not waiters:
                self._waiters.pop(request_id, None)

    # --- viewers following changes ------------------------------------------------------------

    def follow(self, visible: Callable[[ChangedRequest], bool]) -> ChangeFeed:
        feed = ChangeFeed(visible)
        with self._lock:
            self._feeds.add((asyncio.get_running_loop(), feed))
        return feed

    def unfollow(self, feed: ChangeFeed) -> None:
        with self._lock:
            self._feeds = {e for e in self._feeds if e[1] is not feed}

    # --- the listening thread -----------------------------------------------------------------

    def _wake(self, request_ids: list[str] | None) -> None:
        with self._lock:
            ids = list(self._waiters) if request_ids is None else request_ids
            entries = [e for i in ids for e in self._waiters.get(i, ())]
        for loop, woken in entries:
            loop.call_soon_threadsafe(woken.set)

    def _changed(self, changes: list[ChangedRequest] | None) -> None:
        with self._lock:
            feeds = list(self._feeds)
        for loop, feed in feeds:
            try:
                loop.call_soon_threadsafe(feed.offer, changes)
            except RuntimeError:  # its loop closed (shutting down): nobody reads it any more
                self.unfollow(feed)

    def _listen(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {FINISHED_CHANNEL}")
                    conn.execute(f"LISTEN {CHANGED_CHANNEL}")
                    self.listening.set()
                    self._wake(None)  # anything finished while we were not listening
                    self._changed(None)
                    delay = 0.2
                    while not self._stopping.is_set():
                        for notification in conn.notifies(timeout=0.5):
                            if notification.channel == FINISHED_CHANNEL:
                                self._wake([notification.payload])
                            else:
                                self._changed(parse_changed(notification.payload))
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("LISTEN connection lost, reconnecting in %.1f s: %s", delay, exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)

"""Waiting for a request to finish without polling: Postgres LISTEN on the projector's channel.

One thread per API process holds one connection that LISTENs on `FINISHED_CHANNEL`; the
projector NOTIFYs it in the same transaction that writes a terminal status, so a notification
means the row is readable. Waiters register before they check the row (no lost wake-up), and a
reconnect wakes every waiter to re-check, since notifications sent meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict

import psycopg
import sqlalchemy as sa

from projection.models import FINISHED_CHANNEL

log = logging.getLogger("provisioning.api")


class FinishedRequests:
    def __init__(self, database_url: str) -> None:
        url = sa.make_url(database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            defaultdict(set))
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="finished-listener",
                                        daemon=True)

    def start(self) -> FinishedRequests:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=3)

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

    def _wake(self, request_ids: list[str] | None) -> None:
        with self._lock:
            ids = list(self._waiters) if request_ids is None else request_ids
            entries = [e for i in ids for e in self._waiters.get(i, ())]
        for loop, woken in entries:
            loop.call_soon_threadsafe(woken.set)

    def _listen(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {FINISHED_CHANNEL}")
                    self.listening.set()
                    self._wake(None)  # anything finished while we were not listening
                    delay = 0.2
                    while not self._stopping.is_set():
                        for notification in conn.notifies(timeout=0.5):
                            self._wake([notification.payload])
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("LISTEN connection lost, reconnecting in %.1f s: %s", delay, exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)

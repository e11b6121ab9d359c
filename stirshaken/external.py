"""The proxy's side of the external 302 services: hosts, budget, shared breakers.

``stirshaken.as302`` decides what one answer means; this module keeps what
a Kamailio worker needs across the answers of one call and across calls:

1. The host lists (``as302_hosts``, ``vs302_hosts``) are parsed once per
   distinct value, so a live ``cfg.set_now_string`` takes effect on the next
   call; an unparsable list is logged once and means "no host".
2. Breaker states live in a ``BreakerStore`` the caller provides (the KEMI
   script passes Kamailio's htable, shared by every worker of the node), so
   one worker's timeouts spare the others the same wait.
3. The budget is a deadline fixed when the call first asks a service; every
   later host gets ``min(per-host timeout, time left)``.
"""

from __future__ import annotations

import logging
from typing import Protocol

from .as302 import Attempt, BreakerState, CircuitBreaker, ServiceHost, next_attempt, parse_hosts
from .errors import ConfigurationError
from .settings import Settings

log = logging.getLogger("stirshaken.external")

#: Which setting lists the hosts of each kind of service.
HOSTS_SETTING = {"as": "as302_hosts", "vs": "vs302_hosts"}


class BreakerStore(Protocol):
    """Where breaker states are kept: ``get(key)`` gives the stored text or None."""

    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str) -> None: ...


class ExternalServices:
    """Per-process helper for the 302 AS/VS exchange (see the module docstring)."""

    def __init__(self, store: BreakerStore) -> None:
        self._store = store
        self._hosts: dict[str, tuple[ServiceHost, ...]] = {}

    def hosts(self, s: Settings, kind: str) -> tuple[ServiceHost, ...]:
        raw = s.str(HOSTS_SETTING[kind])
        hosts = self._hosts.get(raw)
        if hosts is None:
            try:
                hosts = parse_hosts(raw)
            except ConfigurationError as exc:
                log.error("%s: %s; no such service will be asked", HOSTS_SETTING[kind], exc)
                hosts = ()
            else:
                if not hosts:
                    log.warning("%s is empty: no such service will be asked", HOSTS_SETTING[kind])
            if len(self._hosts) > 32:
                self._hosts.clear()
            self._hosts[raw] = hosts
        return hosts

    def breaker(self, s: Settings) -> CircuitBreaker:
        return CircuitBreaker(
            threshold=max(1, s.int("as302_breaker_failures")),
            open_seconds=max(0, s.int("as302_breaker_open_s")),
        )

    def attempt(
        self, s: Settings, kind: str, *, after: int, now: float, deadline: float
    ) -> Attempt | None:
        """The next host to ask after index ``after`` (-1 for the first), or None."""
        return next_attempt(
            self.hosts(s, kind),
            after=after,
            states=self._state,
            breaker=self.breaker(s),
            now=now,
            deadline=deadline,
            per_host_timeout_ms=max(100, s.int("as302_host_timeout_ms")),
        )

    def record(self, s: Settings, host_key: str, *, failed: bool, now: float) -> None:
        """Count one answer (or timeout) of a host in its shared breaker."""
        breaker = self.breaker(s)
        state = self._state_of(host_key)
        new = breaker.after_failure(state, now) if failed else breaker.after_success()
        if new != state:
            try:
                self._store.set(host_key, new.encode())
            except Exception:  # noqa: BLE001 - a breaker that cannot be saved is not worth a call
                log.warning("cannot save the breaker state of %s", host_key)
            if failed and not breaker.allows(new, now):
                log.warning("302 service %s skipped for %d s after repeated failures", host_key, breaker.open_seconds)

    def _state(self, host: ServiceHost) -> BreakerState:
        return self._state_of(host.key)

    def _state_of(self, key: str) -> BreakerState:
        try:
            return BreakerState.decode(self._store.get(key))
        except Exception:  # noqa: BLE001
            return BreakerState()


class DictBreakerStore:
    """An in-process store, for tests and tools outside Kamailio."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def set(self, key: str, value: str) -> None:
        self.values[key] = value



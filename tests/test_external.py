"""stirshaken.external: host lists from settings, shared breakers, the per-call budget."""

import logging

import pytest

from stirshaken.external import DictBreakerStore, ExternalServices
from stirshaken.settings import Settings, defaults


def settings(**values: object) -> Settings:
    base = defaults()
    return Settings(lambda name: values.get(name, base[name]))


def test_hosts_are_parsed_once_and_bad_lists_mean_none(caplog: pytest.LogCaptureFixture) -> None:
    services = ExternalServices(DictBreakerStore())
    assert [h.key for h in services.hosts(settings(as302_hosts="10.0.0.1, as2:5070"), "as")] == [
        "10.0.0.1:5060",
        "as2:5070",
    ]
    with caplog.at_level(logging.WARNING, logger="stirshaken.external"):
        assert services.hosts(settings(vs302_hosts="bad host:99999"), "vs") == ()
        assert services.hosts(settings(vs302_hosts="bad host:99999"), "vs") == ()
        assert services.hosts(settings(as302_hosts=""), "as") == ()
    assert len([r for r in caplog.records if "bad host" in r.getMessage() or "99999" in r.getMessage()]) == 1
    assert any("as302_hosts is empty" in r.getMessage() for r in caplog.records)


def test_breaker_state_is_shared_through_the_store() -> None:
    store = DictBreakerStore()
    s = settings(as302_hosts="a, b", as302_breaker_failures=2, as302_breaker_open_s=30)
    one, two = ExternalServices(store), ExternalServices(store)  # two workers
    one.record(s, "a:5060", failed=True, now=100)
    two.record(s, "a:5060", failed=True, now=101)
    attempt = one.attempt(s, "as", after=-1, now=102, deadline=110)
    assert attempt is not None and attempt.host.key == "b:5060"
    two.record(s, "a:5060", failed=False, now=140)  # half-open try succeeded
    attempt = one.attempt(s, "as", after=-1, now=141, deadline=150)
    assert attempt is not None and attempt.host.key == "a:5060"


def test_a_store_that_fails_is_a_closed_breaker() -> None:
    class Broken:
        def get(self, key: str) -> str | None:
            raise RuntimeError("htable gone")

        def set(self, key: str, value: str) -> None:
            raise RuntimeError("htable gone")

    services = ExternalServices(Broken())
    s = settings(as302_hosts="a")
    services.record(s, "a:5060", failed=True, now=1)
    attempt = services.attempt(s, "as", after=-1, now=2, deadline=10)
    assert attempt is not None and attempt.timeout_ms == 3000

"""Shared fixtures.

Two worlds:

- ``kemi/`` unit tests run the KEMI script against :class:`tests.fake_ksr.FakeKSR`,
  installed in ``sys.modules["KSR"]`` here, before anything imports the script.
- Integration tests (marker ``kamailio``) start the real parts on free
  loopback ports: Redis, the certificate server (HTTPS), Kamailio with the
  repository's kamailio.cfg and KEMI script, and SIPp callers and vendors.
  They are session-scoped; each test sets its routing group and tunables
  through the fixtures below, which restore the defaults afterwards.

When Kamailio, SIPp or Redis is missing the integration tests are skipped,
except under CI (``CI`` set), where that is an error: ``make test`` installs
them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fake_ksr import FakeKSR  # noqa: E402
from tests import harness  # noqa: E402

FAKE_KSR = FakeKSR()
sys.modules["KSR"] = FAKE_KSR  # type: ignore[assignment]

KEMI_SCRIPT = harness.REPO / "kemi" / "kamailio_stirshaken.py"
SETTINGS_REFRESH = harness.SETTINGS_REFRESH


def load_kemi() -> ModuleType:
    name = "kamailio_stirshaken"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, KEMI_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ksr() -> FakeKSR:
    FAKE_KSR.__init__()  # type: ignore[misc]
    return FAKE_KSR


@pytest.fixture(scope="session")
def kemi() -> ModuleType:
    return load_kemi()


# -- the real parts ------------------------------------------------------------
REQUIRED_TOOLS = (harness.KAMAILIO, harness.SIPP, harness.REDIS_SERVER, harness.KAMCMD)


def _missing_tools() -> list[str]:
    return [tool for tool in REQUIRED_TOOLS if not (os.path.exists(tool) or shutil.which(tool))]


@pytest.fixture(scope="session")
def real_parts_available() -> None:
    missing = _missing_tools()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI: integration tools missing (make deps installs them): {missing}")
        pytest.skip(f"integration tools missing: {missing}")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sip")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from stirshaken.pki import add_leaf, ensure_test_pki

    paths = ensure_test_pki(tmp_path_factory.mktemp("pki"))
    add_leaf(paths, "untrusted", trusted=False)
    add_leaf(paths, "notnauth", spc=None)
    return paths


@pytest.fixture(scope="session")
def redis_server(real_parts_available: None, workdir: Path) -> Iterator[harness.RedisServer]:
    server = harness.RedisServer(workdir / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cert_server(real_parts_available: None, pki, workdir: Path) -> Iterator[harness.CertServer]:  # type: ignore[no-untyped-def]
    server = harness.CertServer(pki.out_dir, workdir / "certserver").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kamailio(real_parts_available: None, pki, cert_server, redis_server, workdir: Path) -> Iterator[harness.Kamailio]:  # type: ignore[no-untyped-def]
    kdir = workdir / "kamailio"
    kdir.mkdir()
    dispatcher_list = harness.write_dispatcher_list(kdir / "dispatcher.list", [harness.Vendor(harness.free_port())])
    instance = harness.Kamailio(kdir, defines=harness.service_defines(pki, cert_server, redis_server.url, dispatcher_list))
    instance.dispatcher_list = dispatcher_list  # type: ignore[attr-defined]
    checked = instance.check_config()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def tune(kamailio: harness.Kamailio) -> Iterator[Callable[..., None]]:
    """``tune(name=value, ...)`` sets stirshaken.* live; the old values come back after the test.

    Workers re-read the values at most once per SETTINGS_REFRESH (1 s), so
    tune() waits that long before returning.
    """
    from stirshaken.settings import BY_NAME

    original: dict[str, int | str] = {}

    def set_values(**values: int | str) -> None:
        for name, value in values.items():
            if name not in original:
                original[name] = kamailio.get_cfg(name, BY_NAME[name].kind)
            kamailio.set_cfg(name, value)
        time.sleep(SETTINGS_REFRESH + 0.1)

    yield set_values
    for name, value in original.items():
        kamailio.set_cfg(name, value)
    if original:
        time.sleep(SETTINGS_REFRESH + 0.1)


@pytest.fixture
def routing(kamailio: harness.Kamailio, workdir: Path) -> Callable[[Sequence[harness.Vendor]], None]:
    """``routing([Vendor(port, attrs), ...])``: the routing group (set 1), reloaded live."""

    def apply(vendors: Sequence[harness.Vendor]) -> None:
        harness.write_dispatcher_list(kamailio.dispatcher_list, vendors)  # type: ignore[attr-defined]
        out = kamailio.kamcmd("dispatcher.reload")
        assert "error" not in out.lower(), out
        listed = kamailio.kamcmd("dispatcher.list")
        for vendor in vendors:
            assert f"sip:127.0.0.1:{vendor.port}" in listed, listed

    return apply


@pytest.fixture
def sip_dir(tmp_path: Path) -> Path:
    """Where this test's SIPp logs go."""
    return tmp_path

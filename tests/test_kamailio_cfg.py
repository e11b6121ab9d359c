"""kamailio.cfg, the settings table and the Makefile agree; the cfg passes `kamailio -c`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from stirshaken.settings import SETTINGS, Settings, cfg_declarations, defaults, markdown_table, resolve_path
from tests import harness

CFG = harness.REPO / "kamailio.cfg"


def declared() -> dict[str, tuple[str, str]]:
    """name -> (raw value, desc) of every stirshaken.* custom parameter in kamailio.cfg."""
    out = {}
    for line in CFG.read_text().splitlines():
        m = re.match(r'^stirshaken\.([a-z0-9_]+)\s*=\s*(.+?)\s+desc\s+"([^"]*)"\s*$', line)
        if m:
            out[m.group(1)] = (m.group(2), m.group(3))
    return out


def trydefs() -> dict[str, str]:
    return dict(re.findall(r"^#!trydef\s+(\w+)\s+(.+?)\s*$", CFG.read_text(), flags=re.M))


def test_cfg_declares_exactly_the_settings_table() -> None:
    assert list(declared()) == [s.name for s in SETTINGS]


def test_cfg_defaults_and_types_match_the_table() -> None:
    defines = trydefs()
    for setting in SETTINGS:
        raw, _ = declared()[setting.name]
        value = defines.get(raw, raw)
        if setting.kind is int:
            assert value == str(setting.default), setting.name
        else:
            assert value == f'"{setting.default}"', setting.name


def test_custom_parameters_come_before_listen_and_loadmodule() -> None:
    lines = CFG.read_text().splitlines()
    last_param = max(i for i, line in enumerate(lines) if line.startswith("stirshaken."))
    first_other = min(i for i, line in enumerate(lines) if line.startswith(("listen", "loadmodule")))
    assert last_param < first_other


def test_readme_lists_every_tunable() -> None:
    readme = (harness.REPO / "README.md").read_text()
    for setting in SETTINGS:
        assert f"`stirshaken.{setting.name}`" in readme, setting.name


def test_settings_view_parses_and_falls_back() -> None:
    values = {"freshness": "30", "route_group": "x", "vs_failure_action": "REJECT", "provider": "bogus"}
    s = Settings(values.get)
    assert s.int("freshness") == 30
    assert s.int("route_group") == 1  # unreadable: the default
    assert s.str("vs_failure_action") == "reject"
    assert s.str("provider") == "local"  # not a choice: the default
    assert defaults().path("as_key_path") == str(harness.REPO / "pki" / "sp-key.pem")
    assert resolve_path("/abs/x") == "/abs/x" and resolve_path("") == ""
    assert "stirshaken.freshness = 60" in cfg_declarations()
    assert markdown_table().count("\n") == len(SETTINGS) + 1


@pytest.mark.kamailio
def test_default_cfg_passes_kamailio_check(real_parts_available: None, tmp_path: Path) -> None:
    """The cfg as shipped (make run's defaults) is valid; so is every define combination tests use."""
    instance = harness.Kamailio(tmp_path)
    result = instance.check_config()
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.kamailio
def test_bench_baseline_cfgs_pass_kamailio_check(real_parts_available: None, tmp_path: Path) -> None:
    cfg = harness.REPO / "bench" / "kamailio-baseline.cfg"
    for extra in ([], ["-A", "WITH_SECSIPID"]):
        instance = harness.Kamailio(tmp_path, cfg=cfg)
        result = subprocess.run(instance.argv("-c", *extra), capture_output=True, text=True, cwd=harness.REPO,
                                timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_make_test() -> None:
    text = (harness.REPO / ".ci" / "run").read_text()
    assert text.startswith("#!/usr/bin/env bash") and "make test" in text
    assert "set -euo pipefail" in text


@pytest.mark.kamailio
@pytest.mark.parametrize(
    ("switch", "name", "expected"),
    [
        ("WITH_STIR_REJECT", "vs_failure_action", "reject"),
        ("WITH_STIR_REQUIRE_IDENTITY", "vs_require_identity", 1),
        ("WITH_STIR_NO_SIGNING", "provider", "disabled"),
        ("WITH_STIR_NO_VERIFY", "vs_enabled", 0),
        ("WITH_STIR_VERSTAT_HEADER", "vs_verstat_placement", "header"),
        ("WITH_STIR_AS302", "provider", "as302"),
        ("WITH_STIR_VS302", "vs_provider", "vs302"),
        ("WITH_AS302_SERVER", "as_server", 1),
    ],
)
def test_mode_switches_set_the_startup_value(real_parts_available: None, tmp_path: Path, switch: str, name: str,
                                             expected: int | str) -> None:
    instance = harness.Kamailio(tmp_path, defines={switch: "1"}, workers=1)
    assert instance.check_config().returncode == 0
    instance.start()
    try:
        assert instance.get_cfg(name, type(expected)) == expected
    finally:
        instance.stop()

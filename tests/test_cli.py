"""The ``stirshaken`` command line, run as installed, against real files and real HTTPS."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stirshaken.pki import PkiPaths, make_test_pki
from tests.cli_runner import STIRSHAKEN, run
from tests.keyring import DEST, ORIG, PRIVATE_KEY_PATH, PUBLIC_KEY_PATH

X5U = "https://cert.example.org/sp.pem"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    out = tmp_path_factory.mktemp("pki")
    made = run("pki", "--out", str(out), "--spc", "742J")
    assert made.returncode == 0, made.stderr
    return PkiPaths.under(out)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cert_server(pki: PkiPaths) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [str(STIRSHAKEN), "serve-certs", "--dir", str(pki.www_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("serve-certs did not start")
        yield f"https://127.0.0.1:{port}/sp.pem"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _sign(key: Path, x5u: str, *extra: str) -> str:
    signed = run("sign", "--key", str(key), "--x5u", x5u, "--orig", ORIG, "--dest", DEST, "--attest", "A", *extra)
    assert signed.returncode == 0, signed.stderr
    return signed.stdout.splitlines()[0]


def test_pki_makes_what_a_service_needs(pki: PkiPaths) -> None:
    for path in (pki.trust_dir / "root.pem", pki.key, pki.cert, pki.chain, pki.tls_cert, pki.tls_key):
        assert path.is_file(), path
    assert pki.chain.read_text().count("BEGIN CERTIFICATE") == 2


def test_sign_prints_identity_and_date() -> None:
    signed = run("sign", "--key", str(PRIVATE_KEY_PATH), "--x5u", X5U, "--orig", "+1 215 555 0121",
                 "--dest", DEST, "--dest", "12155550132", "--attest", "B", "--iat", "1800000000", "--date")
    assert signed.returncode == 0, signed.stderr
    identity, date = signed.stdout.splitlines()
    assert identity.endswith(f";info=<{X5U}>;alg=ES256;ppt=shaken")
    assert date == "Fri, 15 Jan 2027 08:00:00 GMT"


def test_verify_pubkey_with_now_and_max_age() -> None:
    identity = _sign(PRIVATE_KEY_PATH, X5U, "--iat", "1800000000")
    ok = run("verify", "--identity", identity, "--pubkey", str(PUBLIC_KEY_PATH), "--now", "1800000030", "--json")
    assert ok.returncode == 0, ok.stdout
    verdict = json.loads(ok.stdout)
    assert {"verstat", "attest", "status", "reason"} <= verdict.keys()
    assert (verdict["verstat"], verdict["attest"], verdict["status"]) == ("TN-Validation-Passed", "A", 200)

    stale = run("verify", "--identity", identity, "--pubkey", str(PUBLIC_KEY_PATH), "--now", "1800000090", "--json")
    assert stale.returncode == 1
    assert json.loads(stale.stdout)["status"] == 403
    wide = run("verify", "--identity", identity, "--pubkey", str(PUBLIC_KEY_PATH), "--now", "1800000090", "--max-age", "120")
    assert wide.returncode == 0
    assert wide.stdout.startswith("TN-Validation-Passed")


def test_verify_orig_dest_mismatch() -> None:
    identity = _sign(PRIVATE_KEY_PATH, X5U)
    checked = run("verify", "--identity", identity, "--pubkey", str(PUBLIC_KEY_PATH), "--orig", ORIG, "--dest", "19995550000", "--json")
    assert checked.returncode == 1
    assert json.loads(checked.stdout)["status"] == 438


def test_verify_with_certificate_chain_and_trust(pki: PkiPaths, tmp_path: Path) -> None:
    identity = _sign(pki.key, X5U, "--cert", str(pki.cert))
    ok = run("verify", "--identity", identity, "--cert", str(pki.chain), "--trust", str(pki.trust_dir))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    other = make_test_pki(tmp_path / "other")  # a root we do not trust
    untrusted = run("verify", "--identity", identity, "--cert", str(other.chain), "--trust", str(pki.trust_dir), "--json")
    assert untrusted.returncode == 1
    assert json.loads(untrusted.stdout)["status"] == 437


def test_verify_fetches_x5u_over_https(pki: PkiPaths, cert_server: str) -> None:
    identity = _sign(pki.key, cert_server)
    port = cert_server.split(":")[2].split("/")[0]
    fetch_args = ["--trust", str(pki.trust_dir), "--tls-ca", str(pki.root), "--allow-host", "127.0.0.1", "--allow-port", port, "--json"]
    ok = run("verify", "--identity", identity, *fetch_args)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["verstat"] == "TN-Validation-Passed"

    # The SSRF guard: loopback is refused unless allowed.
    refused = run("verify", "--identity", identity, "--trust", str(pki.trust_dir), "--tls-ca", str(pki.root), "--allow-port", port, "--json")
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["status"] == 436

    missing = identity.replace("/sp.pem", "/missing.pem")
    gone = run("verify", "--identity", missing, *fetch_args)
    assert gone.returncode == 1
    assert json.loads(gone.stdout)["status"] == 436


def test_decode_shows_claims_and_problems() -> None:
    identity = _sign(PRIVATE_KEY_PATH, X5U)
    shown = run("decode", identity)
    assert shown.returncode == 0
    assert '"attest": "A"' in shown.stdout and "problems: none" in shown.stdout

    broken = run("decode", identity.replace("alg=ES256", "alg=HS256").replace(f"info=<{X5U}>", "info=<https://x/>"))
    assert broken.returncode == 1
    assert "438" in broken.stdout

    garbage = run("decode", "foo;info=bar")
    assert garbage.returncode == 1
    assert "Traceback" not in garbage.stdout + garbage.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["sign", "--key", "/nonexistent.pem", "--x5u", X5U, "--orig", ORIG, "--dest", DEST, "--attest", "A"],
        ["sign", "--key", str(PRIVATE_KEY_PATH), "--x5u", X5U, "--orig", "alice", "--dest", DEST, "--attest", "A"],
        ["sign", "--key", str(PUBLIC_KEY_PATH), "--x5u", X5U, "--orig", ORIG, "--dest", DEST, "--attest", "A"],
        ["sign", "--key", str(PRIVATE_KEY_PATH), "--x5u", "http://insecure/", "--orig", ORIG, "--dest", DEST, "--attest", "A"],
        ["sign", "--key", str(PRIVATE_KEY_PATH), "--x5u", X5U, "--orig", ORIG, "--dest", DEST, "--attest", "Z"],
        ["verify", "--identity", "x"],  # no key, no trust
        ["verify", "--identity", "x", "--pubkey", "/nonexistent.pem"],
        ["verify", "--identity", "x", "--pubkey", str(PRIVATE_KEY_PATH), "--max-age", "0"],
        ["verify", "--identity", "x", "--pubkey", str(PUBLIC_KEY_PATH), "--orig", ORIG],
        ["verify", "--identity", "x", "--trust", "/nonexistent-dir"],
        ["serve-certs", "--dir", "/nonexistent-dir"],
    ],
)
def test_usage_errors_exit_2_without_traceback(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()


def test_python_dash_m_works() -> None:
    import sys

    result = subprocess.run([sys.executable, "-m", "stirshaken", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "verify" in result.stdout

"""Start and stop the real parts (Redis, certificate server, Kamailio, SIPp) on loopback.

Used by tests/conftest.py and bench/bench_sip.py.  Rules:

1. Every process is started in its own process group and stopped by that
   group's id (SIGTERM, then SIGKILL after a grace period); never by name.
2. Readiness is waited for by probing (PING, TLS connect, SIP OPTIONS), with
   a deadline; there are no fixed sleeps.
3. Only 127.0.0.1, on ports the kernel hands out as free.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
SCENARIOS = REPO / "sipp_scenarios"
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
KAMCMD = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
LOOPBACK = "127.0.0.1"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP right now (SIP uses UDP, the rest TCP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind((LOOPBACK, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


class Process:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(grace)
        else:
            # the leader is gone; make sure no member of its group survives
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self._log.close()
        return self.popen.returncode


def wait_until(predicate, timeout: float, what: str, proc: Process | None = None, step: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: process exited early:\n{proc.log_text()[-4000:]}")
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(step)
    tail = proc.log_text()[-4000:] if proc is not None else ""
    raise TimeoutError(f"{what} not ready after {timeout}s\n{tail}")


# -- Redis ----------------------------------------------------------------------
def redis_ping(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None, cpus: str = "") -> None:
        self.workdir = workdir
        self.port = port or free_port(socket.SOCK_STREAM)
        self.cpus = cpus  # e.g. "1": pinned with taskset (benchmarks: off the Kamailio CPU)
        self.proc: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        return self.workdir / f"redis-{self.port}.sock"

    @property
    def unix_url(self) -> str:
        """The same server through its Unix socket (as `make run` configures it)."""
        return f"unix://{self.socket_path}?db=0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = Process(
            "redis",
            pinned([REDIS_SERVER, "--bind", LOOPBACK, "--port", str(self.port), "--save", "", "--appendonly", "no",
                    "--dir", str(self.workdir), "--protected-mode", "yes",
                    "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"], self.cpus),
            self.workdir / f"redis-{self.port}.log",
        )
        wait_until(lambda: redis_ping(self.port), 10, "redis", self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def command(self, *args: str) -> bytes:
        """One raw command, for test assertions (KEYS, FLUSHALL, ...)."""
        payload = b"".join([b"*%d\r\n" % len(args)] + [b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args])
        with socket.create_connection((LOOPBACK, self.port), timeout=2) as s:
            s.sendall(payload)
            time.sleep(0.05)
            return s.recv(1 << 20)


# -- certificate server ---------------------------------------------------------------
def https_ready(port: int, ca_file: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection((LOOPBACK, port), timeout=0.5) as raw, context.wrap_socket(raw, server_hostname=LOOPBACK):
        return True


class CertServer:
    def __init__(self, pki_dir: Path, workdir: Path, port: int | None = None) -> None:
        self.pki_dir = pki_dir
        self.workdir = workdir
        self.port = port or free_port(socket.SOCK_STREAM)
        self.proc: Process | None = None

    def url(self, name: str = "sp.pem") -> str:
        return f"https://{LOOPBACK}:{self.port}/{name}"

    def start(self) -> CertServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = Process(
            "certserver",
            [str(VENV_BIN / "stirshaken"), "serve-certs", "--dir", str(self.pki_dir / "www"), "--host", LOOPBACK,
             "--port", str(self.port), "--cert", str(self.pki_dir / "tls-cert.pem"),
             "--key", str(self.pki_dir / "tls-key.pem")],
            self.workdir / f"certserver-{self.port}.log",
        )
        wait_until(lambda: https_ready(self.port, self.pki_dir / "root.pem"), 15, "certificate server", self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


# -- Kamailio -----------------------------------------------------------------
def sip_options(port: int, timeout: float = 0.5) -> str | None:
    """Send one OPTIONS to 127.0.0.1:port; the status line of the answer, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        branch = "z9hG4bK" + uuid.uuid4().hex
        msg = (
            f"OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{lport};branch={branch}\r\n"
            f"From: <sip:probe@{LOOPBACK}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{LOOPBACK}:{port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (LOOPBACK, port))
        try:
            data, _ = s.recvfrom(65535)
        except TimeoutError:
            return None
        return data.split(b"\r\n", 1)[0].decode(errors="replace")


def sip_invite(port: int, *, caller: str, callee: str, timeout: float = 5.0) -> str:
    """Send one INVITE to 127.0.0.1:port and return the first final answer (ACKed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        branch = "z9hG4bK" + uuid.uuid4().hex
        call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]
        head = (
            f"Via: SIP/2.0/UDP {LOOPBACK}:{lport};branch={branch}\r\n"
            f"From: <sip:{caller}@{LOOPBACK}>;tag={tag}\r\n"
        )
        s.sendto((
            f"INVITE sip:{callee}@{LOOPBACK} SIP/2.0\r\n{head}To: <sip:{callee}@{LOOPBACK}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{caller}@{LOOPBACK}:{lport}>\r\n"
            f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode(), (LOOPBACK, port))
        while True:
            data, _ = s.recvfrom(65535)
            text = data.decode(errors="replace")
            if not text.startswith("SIP/2.0 1"):
                break
        to = next((line for line in text.split("\r\n") if line.lower().startswith("to:")), "To: <>")
        s.sendto((
            f"ACK sip:{callee}@{LOOPBACK} SIP/2.0\r\n{head}{to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode(), (LOOPBACK, port))
        return text


SETTINGS_REFRESH = 1.0
"""kemi/kamailio_stirshaken.py: seconds a worker keeps the stirshaken.* values it read."""


def service_defines(pki, cert_server: CertServer, redis_url: str, dispatcher_list: Path,  # type: ignore[no-untyped-def]
                    **extra: str) -> dict[str, str]:
    """The -A defines that point kamailio.cfg at a test PKI, certificate server and Redis."""
    q = cfg_string
    return {
        "SS_DISPATCHER_LIST": q(str(dispatcher_list)),
        "SS_REDIS_URL": q(redis_url),
        "SS_AS_KEY_PATH": q(str(pki.key)),
        "SS_AS_CERT_PATH": q(str(pki.cert)),
        "SS_AS_X5U": q(cert_server.url("sp.pem")),
        "SS_VS_TRUST_DIR": q(str(pki.trust_dir)),
        "SS_VS_TLS_CA_FILE": q(str(pki.root)),
        "SS_VS_X5U_PORTS": q(f"443,8443,{cert_server.port}"),
        "SS_VENDOR_TIMEOUT_MS": "1500",
        "SS_DS_RELOAD_DELTA": "0",
        **extra,
    }


def pinned(argv: list[str], cpus: str) -> list[str]:
    """argv run on the given CPUs (taskset), or as is."""
    if not cpus:
        return argv
    return [shutil.which("taskset") or "/usr/bin/taskset", "-c", cpus, *argv]


def cfg_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Kamailio:
    """Kamailio with kamailio.cfg from the repository, on a free loopback UDP port."""

    workdir: Path
    defines: dict[str, str] = field(default_factory=dict)
    cfg: Path = REPO / "kamailio.cfg"
    port: int = 0
    workers: int = 4
    shm_mb: int = 256  # a call's transactions stay ~5 s after it ends: bursts need room
    env: dict[str, str] = field(default_factory=dict)
    cpus: str = ""  # e.g. "0": run pinned with taskset (benchmarks)
    mem_manager: str = "tlsf"  # kamailio -x, as `make run` (Makefile MEM_MANAGER); "": Kamailio's default, qm
    proc: Process | None = None

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.rundir = self.workdir / f"kamailio-{self.port}"

    @property
    def ctl(self) -> str:
        return f"unix:{self.rundir}/kamailio_ctl"

    def argv(self, *extra: str) -> list[str]:
        argv = [KAMAILIO, "-f", str(self.cfg), "-A", f"SS_LISTEN=udp:{LOOPBACK}:{self.port}",
                "-A", f"SS_WORKERS={self.workers}", "-A", f"SS_RUNDIR={cfg_string(str(self.rundir))}",
                "-A", f"SS_CTL_SOCKET={cfg_string(self.ctl)}"]
        for name, value in self.defines.items():
            argv += ["-A", f"{name}={value}"]
        return argv + list(extra)

    def check_config(self) -> subprocess.CompletedProcess[str]:
        self.rundir.mkdir(parents=True, exist_ok=True)
        return subprocess.run(self.argv("-c"), capture_output=True, text=True, cwd=REPO, timeout=60, check=False)

    def start(self, timeout: float = 30) -> Kamailio:
        self.rundir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(self.env)
        self.proc = Process(
            "kamailio",
            pinned(self.argv("-DD", "-E", "-w", str(REPO), "-m", str(self.shm_mb), "-M", "16",
                             *(("-x", self.mem_manager) if self.mem_manager else ())), self.cpus),
            self.workdir / f"kamailio-{self.port}.log",
            cwd=REPO,
            env=env,
        )
        wait_until(lambda: sip_options(self.port) is not None, timeout, "kamailio", self.proc, step=0.1)
        return self

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = self.proc.stop()
        self.proc = None
        return code

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def log_text(self) -> str:
        return self.proc.log_text() if self.proc is not None else ""

    def kamcmd(self, *args: str) -> str:
        result = subprocess.run([KAMCMD, "-s", self.ctl, *args], capture_output=True, text=True, timeout=10,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"kamcmd {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def set_cfg(self, name: str, value: int | str) -> None:
        if isinstance(value, int):
            self.kamcmd("cfg.set_now_int", "stirshaken", name, str(value))
        else:
            self.kamcmd("cfg.set_now_string", "stirshaken", name, value)

    def get_cfg(self, name: str, kind: type = str) -> int | str:
        out = self.kamcmd("cfg.get", "stirshaken", name).strip()
        if kind is int:
            return int(out)
        return out

    def pids(self) -> list[int]:
        """Every process of this Kamailio (for CPU accounting)."""
        if self.proc is None:
            return []
        pgid = self.proc.pid
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                fields = stat[stat.rindex(")") + 2:].split()
                if int(fields[2]) == pgid:  # pgrp
                    pids.append(int(entry.name))
        return pids


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime+stime of these processes, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


# -- dispatcher.list --------------------------------------------------------------
@dataclass(frozen=True)
class Vendor:
    port: int
    attrs: str = ""
    setid: int = 1


def write_dispatcher_list(path: Path, vendors: Sequence[Vendor]) -> Path:
    lines = ["# setid destination flags priority attributes"]
    count = len(vendors)
    for index, vendor in enumerate(vendors):
        attrs = vendor.attrs or "ss_enabled=1;ss_policy=supported"
        lines.append(f"{vendor.setid} sip:{LOOPBACK}:{vendor.port} 0 {10 * (count - index)} {attrs}")
    path.write_text("\n".join(lines) + "\n")
    return path


# -- SIPp ---------------------------------------------------------------------------
@dataclass
class SippResult:
    returncode: int
    finals: list[str]
    log: str

    @property
    def final(self) -> str | None:
        return self.finals[-1] if self.finals else None


def _sipp_base(scenario: str, workdir: Path, tag: str, port: int) -> list[str]:
    return [SIPP, "-sf", str(SCENARIOS / scenario), "-i", LOOPBACK, "-p", str(port), "-nostdin",
            "-trace_msg", "-message_file", str(workdir / f"{tag}-messages.log"),
            "-trace_err", "-error_file", str(workdir / f"{tag}-errors.log")]


class SippUas:
    """A SIPp vendor (UAS) in the background; ``invites()`` are the INVITEs it received."""

    def __init__(self, scenario: str, workdir: Path, port: int | None = None, cpus: str = "",
                 extra: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.tag = f"uas-{self.port}"
        self.messages = workdir / f"{self.tag}-messages.log"
        self.proc = Process(
            "sipp-uas",
            pinned(_sipp_base(scenario, workdir, self.tag, self.port)
                   + ["-bind_local", "-recv_timeout", "30000", *extra], cpus),
            workdir / f"{self.tag}.log",
            cwd=workdir,
        )
        # SIPp binds quickly; wait for the UDP port to be taken
        wait_until(lambda: _udp_port_taken(self.port), 10, "sipp uas", self.proc)

    def received(self) -> list[str]:
        try:
            text = self.messages.read_text(errors="replace")
        except OSError:
            return []
        return [m for m in re.split(r"-{10,}[^\n]*\n", text) if "message received" in m]

    def invites(self) -> list[str]:
        out = []
        for chunk in self.received():
            body = chunk.split("\n\n", 1)[1] if "\n\n" in chunk else chunk
            body = body.lstrip()
            if body.startswith("INVITE "):
                out.append(body)
        return out

    def stop(self) -> None:
        self.proc.stop()


def _udp_port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def run_uac(
    kamailio_port: int,
    workdir: Path,
    *,
    caller: str = "+12155550121",
    callee: str = "+12155550131",
    headers: Sequence[str] = (),
    calls: int = 1,
    rate: float | None = None,
    scenario: str = "call/uac.xml",
    timeout: float = 30,
    extra: Sequence[str] = (),
    cpus: str = "",
) -> SippResult:
    """Run the caller scenario to completion; ``finals`` are the final statuses it logged."""
    if len(headers) > 4:
        raise ValueError("at most 4 extra headers")
    port = free_port()
    tag = f"uac-{port}"
    log_file = workdir / f"{tag}-final.log"
    argv = _sipp_base(scenario, workdir, tag, port) + [
        "-m", str(calls), "-trace_logs", "-log_file", str(log_file),
        "-recv_timeout", str(int(timeout * 1000)), "-timeout", f"{int(timeout) + 5}s", "-timeout_error",
        "-key", "caller", caller, "-key", "callee", callee,
    ]
    padded = list(headers) + [f"X-Pad-{i}: 1" for i in range(len(headers), 4)]
    for index, header in enumerate(padded, start=1):
        argv += ["-key", f"hdr{index}", header]
    if rate is not None:
        argv += ["-r", str(rate)]
    argv += list(extra) + [f"{LOOPBACK}:{kamailio_port}"]
    result = subprocess.run(pinned(argv, cpus), capture_output=True, text=True, cwd=workdir, timeout=timeout + 30, check=False)
    finals = []
    if log_file.exists():
        finals = re.findall(r"final=(\d+)", log_file.read_text(errors="replace"))
    return SippResult(result.returncode, finals, result.stdout[-3000:] + result.stderr[-3000:])


def header_values(message: str, name: str) -> list[str]:
    """Values of header *name* in a SIP message text (case-insensitive name)."""
    values = []
    for line in message.replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            values.append(value.strip())
    return values


@contextlib.contextmanager
def uas(scenario: str, workdir: Path, cpus: str = "", extra: Sequence[str] = ()) -> Iterator[SippUas]:
    server = SippUas(scenario, workdir, cpus=cpus, extra=extra)
    try:
        yield server
    finally:
        server.stop()

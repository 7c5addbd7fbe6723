"""Start an MQTT broker for tests, CI and the demo: mosquitto when present, else embedded amqtt.

mosquitto is run with a generated config: loopback listener, no anonymous
access, a hashed password file and an ACL that confines each device user to
its own ``fl/v1/<fleet>/dev/<user>/`` subtree. The embedded amqtt fallback
exists so a user without root (no mosquitto) still gets a working demo; it
binds to loopback too but has no per-device ACL, so it is for demos only.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CONTROLLER_USER = "controller"

ACL_TEMPLATE = """\
user {controller}
topic readwrite fl/v1/#
topic readwrite homeassistant/#
topic read $SYS/#

pattern write fl/v1/+/dev/%u/state
pattern write fl/v1/+/dev/%u/caps
pattern read fl/v1/+/dev/%u/desired
pattern read fl/v1/+/dev/%u/art/+/chunk/+
pattern write fl/v1/+/dev/%u/art/+/req
pattern write fl/v1/+/dev/%u/job/+
pattern write fl/v1/+/dev/%u/bench/+
pattern write fl/v1/+/dev/%u/tm
"""


class BrokerError(RuntimeError):
    """The broker could not be started."""


def free_port() -> int:
    """A free TCP port on loopback (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


@dataclass
class Credentials:
    """Username/password pairs the broker accepts."""

    users: dict[str, str] = field(default_factory=dict)

    def add(self, user: str, password: str | None = None) -> str:
        """Register a user (a device id or the controller) and return its password."""
        self.users[user] = password or secrets.token_urlsafe(18)
        return self.users[user]


@dataclass
class BrokerHandle:
    """A running broker: where it listens and who may log in."""

    host: str
    port: int
    kind: str
    credentials: Credentials
    _proc: subprocess.Popen[bytes] | None = None
    _stop: object | None = None
    workdir: Path | None = None

    def stop(self) -> None:
        """Stop the broker and wait for it, so no process outlives its owner."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        if callable(self._stop):
            self._stop()

    def add_user(self, user: str, password: str | None = None) -> str:
        """Add a login at run time (mosquitto reloads its password file on SIGHUP)."""
        pw = self.credentials.add(user, password)
        if self.kind == "mosquitto" and self.workdir is not None and self._proc is not None:
            _write_password_file(self.workdir / "passwd", self.credentials)
            self._proc.send_signal(1)  # SIGHUP: reload password and ACL files
            time.sleep(0.2)
        return pw

    def __enter__(self) -> BrokerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mosquitto_binary() -> str | None:
    """Path of mosquitto; Debian puts it in /usr/sbin, which a non-root PATH often lacks."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


def _write_password_file(path: Path, creds: Credentials) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{u}:{p}\n" for u, p in creds.users.items()))
    tmp.chmod(0o600)
    subprocess.run(["mosquitto_passwd", "-U", str(tmp)], check=True, capture_output=True)
    tmp.replace(path)


def start_mosquitto(workdir: Path, credentials: Credentials, port: int | None = None) -> BrokerHandle:
    """Run mosquitto on loopback with a password file and per-device ACL."""
    binary = mosquitto_binary()
    if binary is None:
        raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if CONTROLLER_USER not in credentials.users:
        credentials.add(CONTROLLER_USER)
    _write_password_file(workdir / "passwd", credentials)
    (workdir / "acl").write_text(ACL_TEMPLATE.format(controller=CONTROLLER_USER))
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        "per_listener_settings false\n"
        f"user {getpass.getuser()}\n"
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous false\n"
        f"password_file {workdir / 'passwd'}\n"
        f"acl_file {workdir / 'acl'}\n"
        "persistence false\n"
        "max_queued_messages 100000\n"
        "max_inflight_messages 100\n"
        "max_packet_size 1048576\n"
        "log_type error\nlog_type warning\n"
        "log_dest stderr\n"
    )
    log_file = (workdir / "mosquitto.log").open("wb")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_port("127.0.0.1", port)
    except BrokerError:
        proc.kill()
        proc.wait()
        raise BrokerError(f"mosquitto did not start; see {workdir / 'mosquitto.log'}") from None
    return BrokerHandle("127.0.0.1", port, "mosquitto", credentials, _proc=proc, workdir=workdir)


def start_amqtt(credentials: Credentials, port: int | None = None) -> BrokerHandle:
    """Run the pure-Python amqtt broker in a background thread of this process, loopback only."""
    from amqtt.broker import Broker

    port = port or free_port()
    if CONTROLLER_USER not in credentials.users:
        credentials.add(CONTROLLER_USER)
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    loop = asyncio.new_event_loop()
    started = threading.Event()
    broker_box: dict[str, Broker] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        broker = Broker(config, loop=loop)
        broker_box["b"] = broker
        loop.run_until_complete(broker.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
    thread.start()
    if not started.wait(15):
        raise BrokerError("embedded amqtt broker did not start")
    wait_port("127.0.0.1", port)

    def stop() -> None:
        fut = asyncio.run_coroutine_threadsafe(broker_box["b"].shutdown(), loop)
        try:
            fut.result(timeout=10)
        except Exception:  # noqa: BLE001 - best effort on shutdown
            log.warning("amqtt shutdown raised", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)

    return BrokerHandle("127.0.0.1", port, "amqtt", credentials, _stop=stop)


def start_broker(workdir: Path, credentials: Credentials, prefer: str = "auto") -> BrokerHandle:
    """mosquitto if its binary exists (or is required), else embedded amqtt."""
    if prefer == "mosquitto" or (prefer == "auto" and mosquitto_binary()):
        return start_mosquitto(workdir, credentials)
    return start_amqtt(credentials)

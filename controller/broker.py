"""Run the MQTT broker: mosquitto with dynamic security, or (demo without mosquitto) embedded amqtt.

mosquitto runs with its dynamic-security plugin, configured by this module:

* **accounts**: one per device plus ``controller``; passwords hashed (PBKDF2-SHA512) in
  ``dynamic-security.json``; added and revoked *at run time* through the plugin's
  ``$CONTROL/dynamic-security/v1`` topic (:class:`DynsecAdmin`). Revoking deletes the account,
  and the plugin disconnects a connected device at once; its reconnects are refused.
* **client id bound to the account**: a device account only connects with client id = its
  device id, so a device (or a stolen password) cannot take over another device's session
  by logging in with its client id — the broker refuses the connection.
* **ACL bound to the device's own fleet**: the device's role allows exactly its topics under
  ``fl/v1/<fleet>/dev/<id>/`` (publish state/caps/req/job/bench/tm; subscribe desired and
  its chunks); everything else is denied by default, reads included.
* **TLS**: with ``tls_port``, a second listener whose server certificate is issued by a CA
  the controller creates (:mod:`controller.broker_pki`); agents pin that CA.
* **unprivileged**: started as root, mosquitto runs as the ``mosquitto`` account (files are
  handed to it); otherwise as the calling user.

The embedded amqtt fallback exists so a user without root (no mosquitto) still gets a working
demo; it binds to loopback too but has no accounts or ACL, so it is for demos only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONTROLLER_USER = "controller"
BROKER_ACCOUNT = "mosquitto"
"""The unprivileged account mosquitto runs as when started by root (Debian's package creates it)."""
DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1"
STATE_ROOT = Path("/var/lib/edgefleet/mosquitto")
"""Where root keeps the broker's own files for a broker folder the broker account cannot reach."""
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/arm-linux-gnueabihf/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)

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
"""File-based ACL equivalent of the device role (for brokers configured by hand with ``acl_file``)."""

DEVICE_SENDS = ("state", "caps", "art/+/req", "job/+", "bench/+", "tm")
DEVICE_RECEIVES = ("desired", "art/+/chunk/+")


class BrokerError(RuntimeError):
    """The broker could not be started or refused an account change; the message says what to do."""


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
    """Username/password pairs the broker accepts (device users optionally bound to a fleet)."""

    users: dict[str, str] = field(default_factory=dict)
    fleets: dict[str, str] = field(default_factory=dict)

    def add(self, user: str, password: str | None = None, *, fleet: str | None = None) -> str:
        """Register a user (a device id or the controller) and return its password."""
        self.users[user] = password or secrets.token_urlsafe(18)
        if fleet:
            self.fleets[user] = fleet
        return self.users[user]


# ---------------------------------------------------------------- dynamic-security documents

def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def device_role_name(device_id: str) -> str:
    """One role per device: its ACL names its own fleet and id, nothing else."""
    return f"device-{device_id}"


def device_role(device_id: str, fleet: str | None) -> dict[str, Any]:
    """The device's role: publish its reports, subscribe to (and receive) its desired state and chunks.

    ``fleet`` None allows any fleet level (``+``), for test brokers shared by many fleets.
    """
    root = f"fl/v1/{fleet or '+'}/dev/{device_id}/"
    acls = [_acl("publishClientSend", root + leaf) for leaf in DEVICE_SENDS]
    for leaf in DEVICE_RECEIVES:
        acls += [_acl("subscribePattern", root + leaf), _acl("publishClientReceive", root + leaf)]
    return {"rolename": device_role_name(device_id), "acls": acls}


def controller_roles() -> list[dict[str, Any]]:
    """The controller reads and writes the fleet tree and Home Assistant discovery, and manages accounts."""
    acls = []
    for topic in ("fl/v1/#", "homeassistant/#"):
        acls += [_acl("publishClientSend", topic), _acl("publishClientReceive", topic), _acl("subscribePattern", topic)]
    acls += [_acl("publishClientReceive", "$SYS/#"), _acl("subscribePattern", "$SYS/#")]
    admin = "$CONTROL/dynamic-security/#"
    return [
        {"rolename": "controller", "acls": acls},
        {"rolename": "dynsec-admin", "acls": [_acl("publishClientSend", admin), _acl("publishClientReceive", admin),
                                              _acl("subscribePattern", admin)]},
    ]


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = 101) -> dict[str, Any]:
    """Password fields of a dynamic-security client (PBKDF2-HMAC-SHA512, 64-byte key, as mosquitto_ctrl writes)."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": iterations}


def device_client(device_id: str, password: str) -> dict[str, Any]:
    """A device account: client id bound to the device id, its own role."""
    return {"username": device_id, "clientid": device_id, "textName": f"edgefleet device {device_id}",
            "roles": [{"rolename": device_role_name(device_id)}], **hash_password(password)}


def dynsec_document(credentials: Credentials) -> dict[str, Any]:
    """The whole initial ``dynamic-security.json``: controller + every device known at start."""
    clients, roles = [], controller_roles()
    for user, password in credentials.users.items():
        if user == CONTROLLER_USER:
            clients.append({"username": user, "textName": "edgefleet controller",
                            "roles": [{"rolename": "controller"}, {"rolename": "dynsec-admin"}],
                            **hash_password(password)})
        else:
            clients.append(device_client(user, password))
            roles.append(device_role(user, credentials.fleets.get(user)))
    return {"clients": clients, "groups": [], "roles": roles,
            "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                                 "unsubscribe": True}}


# ---------------------------------------------------------------- run-time account management

class DynsecAdmin:
    """Add and revoke device accounts on a running mosquitto through its dynamic-security topic.

    Logs in as the controller (which holds the ``dynsec-admin`` role); each call publishes one
    batch of commands and waits for the plugin's answer, so when it returns the change is live.

    Example:
        >>> with DynsecAdmin("127.0.0.1", 1883, "controller", pw) as admin:  # doctest: +SKIP
        ...     admin.add_device("pi-1", "s3cret", fleet="home")
        ...     admin.remove_device("pi-1")   # disconnects pi-1 now; its logins are refused
    """

    def __init__(self, host: str, port: int, username: str, password: str, *, tls_ca: Path | None = None,
                 timeout: float = 10.0) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.timeout = timeout
        self._responses: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        connected = threading.Event()
        self._refused: list[str] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edgefleet-admin-{uuid.uuid4().hex[:8]}")
        self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                self._refused.append(str(reason))
            connected.set()

        self.client.on_connect = on_connect
        self.client.on_message = self._on_message
        try:
            self.client.connect(host, port)
        except OSError as exc:
            raise BrokerError(f"cannot reach the broker at {host}:{port}: {exc}") from exc
        self.client.loop_start()
        if not connected.wait(timeout) or self._refused:
            self.close()
            why = ", ".join(self._refused) or "no answer"
            raise BrokerError(f"broker {host}:{port} refused the controller login ({why}): check "
                              "EDGEFLEET_BROKER_PASSWORD / the broker's controller.password")
        self.client.subscribe(DYNSEC_TOPIC + "/response", qos=1)
        time.sleep(0.1)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> DynsecAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            answers = json.loads(msg.payload).get("responses", [])
        except ValueError:
            return
        with self._cond:
            for answer in answers:
                if answer.get("correlationData"):
                    self._responses[answer["correlationData"]] = answer
            self._cond.notify_all()

    def run(self, commands: list[dict[str, Any]], *, ignore: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Send commands in one message and wait for every answer.

        Raises:
            BrokerError: no answer in time, or a command failed with an error not in ``ignore``.
        """
        tags = [uuid.uuid4().hex for _ in commands]
        payload = {"commands": [{**c, "correlationData": t} for c, t in zip(commands, tags, strict=True)]}
        self.client.publish(DYNSEC_TOPIC, json.dumps(payload), qos=1)
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while not all(t in self._responses for t in tags):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrokerError("the broker did not answer account changes: is its dynamic-security plugin "
                                      "loaded (run it with `edgefleet broker`)?")
                self._cond.wait(left)
            answers = [self._responses.pop(t) for t in tags]
        for command, answer in zip(commands, answers, strict=True):
            error = answer.get("error")
            if error and not any(part in error for part in ignore):
                raise BrokerError(f"broker refused {command['command']}: {error}")
        return answers

    def add_device(self, device_id: str, password: str, *, fleet: str | None = None) -> None:
        """Create (or replace) the device's role and account; replacing changes its password."""
        self.remove_device(device_id)
        role = device_role(device_id, fleet)
        self.run([{"command": "createRole", "rolename": role["rolename"]}]
                 + [{"command": "addRoleACL", "rolename": role["rolename"], **acl} for acl in role["acls"]]
                 + [{"command": "createClient", "username": device_id, "password": password, "clientid": device_id,
                     "textname": f"edgefleet device {device_id}",
                     "roles": [{"rolename": role["rolename"]}]}])

    def remove_device(self, device_id: str) -> None:
        """Delete the account (the plugin disconnects the device now) and its role; absent is fine."""
        self.run([{"command": "deleteClient", "username": device_id},
                  {"command": "deleteRole", "rolename": device_role_name(device_id)}], ignore=("not found",))

    def list_clients(self) -> list[str]:
        """Usernames of every account."""
        answer = self.run([{"command": "listClients", "verbose": False, "count": -1}])[0]
        return list(answer.get("data", {}).get("clients", []))


# ---------------------------------------------------------------- mosquitto process

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
    tls_port: int | None = None
    ca_cert: Path | None = None
    _private_dir: Path | None = None

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
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    @property
    def pid(self) -> int | None:
        """The broker process id (None for the embedded broker)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit code once the broker process ended on its own, else None."""
        return self._proc.poll() if self._proc is not None else None

    def admin(self) -> DynsecAdmin:
        """An account manager logged in as the controller (close it after use)."""
        return DynsecAdmin(self.host, self.port, CONTROLLER_USER, self.credentials.users[CONTROLLER_USER])

    def add_user(self, user: str, password: str | None = None, *, fleet: str | None = None) -> str:
        """Add a device login at run time (live when this returns); returns its password."""
        pw = self.credentials.add(user, password, fleet=fleet)
        if self.kind == "mosquitto":
            with self.admin() as admin:
                admin.add_device(user, pw, fleet=fleet)
        return pw

    def remove_user(self, user: str) -> None:
        """Revoke a device login: a connected device is disconnected now, later logins are refused."""
        self.credentials.users.pop(user, None)
        if self.kind == "mosquitto":
            with self.admin() as admin:
                admin.remove_device(user)

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


def dynsec_plugin() -> str | None:
    """Path of mosquitto's dynamic-security plugin (Debian ships it in the ``mosquitto`` package)."""
    return next((p for p in DYNSEC_PLUGIN_PATHS if Path(p).exists()), None)


def _reachable(path: Path, uid: int, gids: set[int]) -> bool:
    """Can ``uid`` traverse every directory down to ``path``? (Decides where root puts the broker's files.)"""
    for part in [*reversed(path.resolve().parents), path.resolve()]:
        st = part.stat()
        if st.st_uid == uid:
            ok = st.st_mode & 0o100
        elif st.st_gid in gids:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True


def _run_as(workdir: Path, *, persistent: bool = False) -> tuple[str | None, Path, Path | None]:
    """Account to drop to, directory for its files, and a private directory to delete afterwards.

    mosquitto's own files (config, accounts, server key) go to ``workdir/mosquitto``; the CA key
    and the controller's password stay in ``workdir``, out of the broker account's reach.
    As root: the ``mosquitto`` account when it exists (never root), with its folder handed to it;
    a workdir it cannot reach (pytest's 0700 temp root) is replaced by a private one under /tmp.
    """
    if os.geteuid() != 0:
        return None, workdir / "mosquitto", None
    try:
        account = pwd.getpwnam(BROKER_ACCOUNT)
    except KeyError:
        raise BrokerError(f"refusing to run mosquitto as root and there is no {BROKER_ACCOUNT!r} account: "
                          "install Debian's mosquitto package or run as an unprivileged user") from None
    gids = {account.pw_gid}
    if _reachable(workdir, account.pw_uid, gids):
        return BROKER_ACCOUNT, workdir / "mosquitto", None
    if persistent:  # e.g. a workspace under /root: the accounts go to a stable folder the broker can reach
        stable = STATE_ROOT / hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:16]
        stable.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(stable.parent, 0o755)
        log.info("%s is not reachable by user %s; its accounts are kept in %s", workdir, BROKER_ACCOUNT, stable)
        return BROKER_ACCOUNT, stable, None
    private = Path(tempfile.mkdtemp(prefix="edgefleet-mosquitto-"))
    os.chmod(private, 0o711)
    log.info("%s is not reachable by user %s; broker files go to %s", workdir, BROKER_ACCOUNT, private)
    return BROKER_ACCOUNT, private / "broker", private


def _hand_over(folder: Path, account: str | None) -> None:
    if account is None:
        return
    info = pwd.getpwnam(account)
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, info.pw_uid, info.pw_gid)


def write_config(files: Path, *, port: int, host: str = "127.0.0.1", tls_port: int | None = None,
                 tls_host: str = "127.0.0.1", tls_files: tuple[Path, Path, Path] | None = None,
                 account: str | None = None, plugin: str) -> Path:
    """``mosquitto.conf`` for the generated dynamic-security file and listeners."""
    lines = [
        "per_listener_settings false",
        f"listener {port} {host}",
    ]
    if tls_port is not None and tls_files is not None:
        ca, cert, key = tls_files
        lines += [f"listener {tls_port} {tls_host}", f"cafile {ca}", f"certfile {cert}", f"keyfile {key}",
                  "tls_version tlsv1.2"]
    lines += [
        *([f"user {account}"] if account else []),
        "allow_anonymous false",
        f"plugin {plugin}",
        f"plugin_opt_config_file {files / 'dynamic-security.json'}",
        "persistence false",
        "max_queued_messages 100000",
        "max_inflight_messages 100",
        "max_packet_size 1048576",
        "log_type error", "log_type warning", "log_type notice",
        "log_dest stderr",
    ]
    conf = files / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def prepare(workdir: Path, credentials: Credentials, *, port: int, host: str = "127.0.0.1",
            tls_port: int | None = None, tls_hosts: list[str] | None = None,
            keep_accounts: bool = False) -> tuple[Path, str | None, Path | None, Path | None]:
    """Write every file mosquitto needs; returns (config, account, CA certificate, private dir).

    With ``keep_accounts`` an existing ``dynamic-security.json`` (accounts added at run time by
    an earlier run) is kept and only the controller's password is refreshed in it.
    """
    plugin = dynsec_plugin()
    if plugin is None:
        raise BrokerError("mosquitto's dynamic-security plugin is missing (Debian: apt-get install mosquitto ≥ 2.0)")
    account, files, private = _run_as(workdir, persistent=keep_accounts)
    files.mkdir(parents=True, exist_ok=True)
    files.chmod(0o700)
    if CONTROLLER_USER not in credentials.users:
        credentials.add(CONTROLLER_USER)
    dynsec = files / "dynamic-security.json"
    if keep_accounts and dynsec.exists():
        doc = json.loads(dynsec.read_text())
        for client in doc.get("clients", []):
            if client.get("username") == CONTROLLER_USER:
                client.update(hash_password(credentials.users[CONTROLLER_USER]))
    else:
        doc = dynsec_document(credentials)
    dynsec.write_text(json.dumps(doc, indent=1))
    dynsec.chmod(0o600)
    ca_cert = tls_files = None
    if tls_port is not None:
        from controller.broker_pki import ensure_ca, issue_server_certificate

        ca = ensure_ca(workdir / "ca")
        cert, key = issue_server_certificate(ca, files / "tls", tls_hosts or [host])
        ca_copy = files / "tls" / "ca.pem"
        shutil.copyfile(ca.cert, ca_copy)
        ca_cert, tls_files = ca.cert, (ca_copy, cert, key)
    conf = write_config(files, port=port, host=host, tls_port=tls_port, tls_host=host, tls_files=tls_files,
                        account=account, plugin=plugin)
    _hand_over(files, account)
    return conf, account, ca_cert, private


def start_mosquitto(workdir: Path, credentials: Credentials, port: int | None = None, *,
                    host: str = "127.0.0.1", tls_port: int | None = None, tls_hosts: list[str] | None = None,
                    keep_accounts: bool = False) -> BrokerHandle:
    """Run mosquitto (dynamic security, per-device ACL, optional TLS) as an unprivileged user.

    Args:
        workdir: where the configuration, accounts and (with TLS) the CA live.
        credentials: accounts to create at start (the controller's is added when missing).
        port: plain listener (default: a free loopback port); ``tls_port``: TLS listener too.
        tls_hosts: names/IPs the server certificate is valid for (default: ``host``).
        keep_accounts: keep the accounts an earlier run added (``edgefleet broker`` restarts).
    """
    binary = mosquitto_binary()
    if binary is None:
        raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf, account, ca_cert, private = prepare(workdir, credentials, port=port, host=host, tls_port=tls_port,
                                              tls_hosts=tls_hosts, keep_accounts=keep_accounts)
    log_path = workdir / "mosquitto.log"
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log_file, stderr=subprocess.STDOUT)
    handle = BrokerHandle(host, port, "mosquitto", credentials, _proc=proc, workdir=workdir, tls_port=tls_port,
                          ca_cert=ca_cert, _private_dir=private)
    try:
        wait_port(host if host != "0.0.0.0" else "127.0.0.1", port)  # noqa: S104 - a bind-all address, not a bind
        if tls_port is not None:
            wait_port(host if host != "0.0.0.0" else "127.0.0.1", tls_port)  # noqa: S104
    except BrokerError:
        handle.stop()
        raise BrokerError(f"mosquitto did not start; see {log_path}") from None
    log.info("mosquitto on %s:%d%s as user %s", host, port, f" (TLS {tls_port})" if tls_port else "",
             account or "(caller)")
    return handle


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

"""Enroll a device in one step: broker account + registry record + the bundle the agent starts from.

Before this, getting one agent onto the fleet took a dozen manual steps (password file,
``mosquitto_passwd``, copying the ACL, finding the controller's public key...). Enrollment
does them together and hands back everything the device needs, in one folder:

* ``agent.toml`` — device id, fleet, profile, broker host/port (the TLS port when the broker
  has one), paths; ``edgefleet agent --config agent.toml`` starts from it;
* ``password`` — the device's broker password (mode 0600), generated here, never stored by
  the controller in clear (the broker keeps a PBKDF2 hash);
* ``controller.pub`` — the key the agent pins to verify signed artifacts;
* ``ca.pem`` — the CA of the broker's TLS listener (with TLS).

Revocation deletes the broker account: a connected agent is disconnected at once and its
reconnects are refused (the agent gives up after a bounded number of refusals).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from common.profiles import ProfileError, load_profile
from controller.broker import BrokerError, DynsecAdmin
from controller.settings import Settings

DEFAULT_DEVICE_DATA_DIR = "/var/lib/edgefleet"
SECRET_FILES = {"password"}


class EnrollmentError(RuntimeError):
    """Enrollment could not complete; the message says what to fix (``http_status``: how the API maps it)."""

    def __init__(self, message: str, http_status: int = 503) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = "enrollment_failed"


@dataclass
class EnrollmentBundle:
    """The files a device needs, by name (text), and where its agent will keep its state."""

    device_id: str
    files: dict[str, str] = field(default_factory=dict)

    def write(self, out_dir: Path) -> list[Path]:
        """Write the bundle (folder 0700, password 0600); existing files are replaced."""
        out_dir.mkdir(parents=True, exist_ok=True)
        out_dir.chmod(0o700)
        written = []
        for name, text in self.files.items():
            path = out_dir / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if name in SECRET_FILES else 0o644)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            written.append(path)
        return written


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def agent_toml(*, device_id: str, fleet: str, profile: str, host: str, port: int, tls: bool,
               data_dir: str = DEFAULT_DEVICE_DATA_DIR) -> str:
    """The agent's configuration file; relative paths are resolved against the file's folder."""
    lines = [
        "# edgefleet agent configuration, written by `edgefleet devices register`.",
        "# Start with: edgefleet agent --config agent.toml   (relative paths: this file's folder)",
        "[device]",
        f"id = {_toml_str(device_id)}",
        f"fleet = {_toml_str(fleet)}",
        f"profile = {_toml_str(profile)}",
        "",
        "[broker]",
        f"host = {_toml_str(host)}",
        f"port = {port}",
        f"username = {_toml_str(device_id)}",
        'password_file = "password"',
        *(['tls_ca = "ca.pem"'] if tls else []),
        "",
        "[controller]",
        'public_key = "controller.pub"',
        "",
        "[paths]",
        f"data_dir = {_toml_str(data_dir)}",
        "",
    ]
    return "\n".join(lines)


def _admin(settings: Settings) -> DynsecAdmin:
    if not settings.broker_host:
        raise EnrollmentError("no broker configured: set EDGEFLEET_BROKER_HOST (and run `edgefleet broker`)")
    try:
        return DynsecAdmin(settings.broker_host, settings.broker_port, settings.broker_username,
                           settings.broker_password_value())
    except BrokerError as exc:
        raise EnrollmentError(str(exc)) from exc


def controller_public_key(settings: Settings) -> Path:
    """The public half of the controller's signing key (created with the key on first use)."""
    from common.keys import load_or_create_private_key

    private = settings.compression_workspace / "keys" / "controller.key"
    load_or_create_private_key(private)
    return private.with_suffix(".pub")


def enroll_device(settings: Settings, registry: object, *, device_id: str, profile: str, actor: str = "local",
                  data_dir: str = DEFAULT_DEVICE_DATA_DIR) -> EnrollmentBundle:
    """Create the device's broker account and registry record; return its bundle.

    Enrolling an enrolled device again issues a new password (the old one stops working).

    Raises:
        EnrollmentError: unknown profile, no broker configured, broker refused the change.
    """
    try:
        load_profile(profile)
    except ProfileError as exc:
        raise EnrollmentError(f"unknown profile {profile!r}: {exc}", http_status=422) from exc
    password = secrets.token_urlsafe(24)
    with _admin(settings) as admin:
        try:
            admin.add_device(device_id, password, fleet=settings.fleet)
        except BrokerError as exc:
            raise EnrollmentError(str(exc)) from exc
    registry.devices.register_device(device_id=device_id, profile=profile, actor=actor)  # type: ignore[attr-defined]
    tls = settings.broker_tls_port is not None
    host = settings.broker_public_host or settings.broker_host or "127.0.0.1"
    bundle = EnrollmentBundle(device_id=device_id)
    bundle.files["agent.toml"] = agent_toml(device_id=device_id, fleet=settings.fleet, profile=profile, host=host,
                                            port=settings.broker_tls_port if tls else settings.broker_port,
                                            tls=tls, data_dir=data_dir)
    bundle.files["password"] = password + "\n"
    bundle.files["controller.pub"] = controller_public_key(settings).read_text()
    if tls:
        ca = settings.broker_folder / "ca" / "ca.pem"
        if not ca.exists():
            raise EnrollmentError(f"EDGEFLEET_BROKER_TLS_PORT is set but {ca} does not exist: start the broker with "
                                  "`edgefleet broker --tls-port N` (it creates the CA) or set EDGEFLEET_BROKER_DIR")
        bundle.files["ca.pem"] = ca.read_text()
    return bundle


def revoke_device(settings: Settings, *, device_id: str) -> None:
    """Delete the device's broker account: it is disconnected now and cannot log in again.

    Raises:
        EnrollmentError: no broker configured or it refused the change.
    """
    with _admin(settings) as admin:
        try:
            admin.remove_device(device_id)
        except BrokerError as exc:
            raise EnrollmentError(str(exc)) from exc


def announce_offline(fleet: object, device_id: str) -> bool:
    """Publish a revoked device's offline state on its behalf (retained, its own session id and seq).

    Deleting a broker account disconnects the device *without* its last-will, so nothing else
    would ever say it went away. ``fleet`` is the running FleetService. Returns False for a
    device that never sent a state.
    """
    from common import topics
    from common.messages import DeviceState
    from controller.registry import NotFoundError

    try:
        record = fleet.registry.devices.get_device(device_id=device_id)  # type: ignore[attr-defined]
    except NotFoundError:
        return False
    if not record.state:
        return False
    will = DeviceState.model_validate({**record.state, "online": False})
    info = fleet.client.publish(topics.state(fleet.fleet, device_id), will.to_bytes(),  # type: ignore[attr-defined]
                                qos=1, retain=True)
    fleet.desired.await_acks([info], f"offline state of {device_id}")  # type: ignore[attr-defined]
    return True

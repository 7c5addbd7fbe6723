"""``edgefleet fleet status|deployment`` read the registry without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from common.messages import DeviceState
from controller.cli import main
from controller.registry import Registry


def test_fleet_status_and_deployment(tmp_path, capsys):
    ws = tmp_path / "ws"
    with Registry(ws) as reg:
        reg.devices.record_device_state(
            state=DeviceState(device_id="pi-1", session_id="s", online=True, profile="rpi4", ts=datetime.now(UTC))
        )
    assert main(["fleet", "--workspace", str(ws), "status"]) == 0
    out = capsys.readouterr().out
    assert "pi-1" in out and "rpi4" in out and "yes" in out
    assert main(["fleet", "--workspace", str(ws), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "pi-1"
    assert main(["fleet", "--workspace", str(ws), "deployment", "nope"]) == 1
    assert "no deployment" in capsys.readouterr().out

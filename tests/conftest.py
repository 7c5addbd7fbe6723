"""Shared fixtures: a real mosquitto per test module on a free loopback port."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.broker import BrokerHandle, Credentials, start_mosquitto


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerHandle]:
    """A real mosquitto with password file + per-device ACL; add device logins with ``handle.add_user``."""
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is required for the tests: apt-get install mosquitto (make test does it)")
    handle = start_mosquitto(tmp_path_factory.mktemp("mosquitto"), Credentials())
    try:
        yield handle
    finally:
        handle.stop()

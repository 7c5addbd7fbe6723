"""The console in a real browser: Debian's headless Chromium driven by Selenium (Debian's chromedriver).

Against a live controller (real uvicorn, real fleet service), a real mosquitto and two real
agents (in-process ``agent.daemon.Agent``: real MQTT, signed artifacts, real ONNX benchmarks):
an operator enters a key, compresses a model from the console, deploys it from the console
and watches the rollout until every device committed; then deploys a damaged build and sees
the rollout rolled back with the agents' reason. Screenshots land in ``build/console/``.

Skipped, saying why, when chromium, chromedriver or selenium are missing (``.ci/run`` installs
``chromium chromium-driver``; selenium is in the ``dev`` extra).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from controller.broker import BrokerHandle
from tests.controller.api.conftest import REPO, Controller, InProcessController, make_controller, tiny_onnx, wait_job

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = REPO / "build" / "console"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
agent_daemon = pytest.importorskip("agent.daemon")
agent_config = pytest.importorskip("agent.config")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"no headless browser: {CHROMIUM} / {CHROMEDRIVER} missing (apt-get install chromium chromium-driver)",
                allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
FAST = dict(bench_runs=8, bench_warmup=2, rerequest_interval_s=1.0, telemetry_interval_s=1.0, threads=1)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, mosquitto: BrokerHandle) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("browser")
    name = f"b{uuid.uuid4().hex[:6]}"
    base = make_controller(tmp, EDGEFLEET_BROKER_HOST=mosquitto.host, EDGEFLEET_BROKER_PORT=str(mosquitto.port),
                           EDGEFLEET_BROKER_PASSWORD=mosquitto.credentials.users["controller"], EDGEFLEET_FLEET=name,
                           EDGEFLEET_AUTH_READS="true")
    ctl = InProcessController(url=base.url, workspace=base.workspace, env=base.env, port=base.port,
                              keys=base.keys).start()
    agents, devices = [], []
    try:
        for i in range(2):
            dev = f"{name}-dev{i}"
            cfg = agent_config.AgentConfig(
                device_id=dev, fleet=name, profile_id="x86-edge", data_dir=tmp / dev,
                controller_key=base.workspace / "keys" / "controller.pub", broker_host=mosquitto.host,
                broker_port=mosquitto.port, username=dev, password=mosquitto.add_user(dev), **FAST)
            agents.append(agent_daemon.Agent(cfg))
            devices.append(dev)
            agents[-1].start()
        yield {"controller": ctl, "devices": devices, "tmp": tmp}
    finally:
        for a in agents:
            a.stop()
        ctl.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                 "--disable-dev-shm-usage"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _until(driver, predicate, timeout: float = 60.0, what: str = "") -> object:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def safe(d):
        try:
            return predicate(d)
        except (StaleElementReferenceException, WebDriverException):
            return False  # htmx swapped the element under us: look again

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(safe)
    except Exception:
        driver.save_screenshot(str(SHOTS / f"failed-{what or 'wait'}.png"))
        raise AssertionError(f"timed out waiting for {what}: {driver.find_element('id', 'content').text[:2000]}"
                             ) from None


def _text(driver, css: str) -> str:
    return driver.find_element("css selector", css).text


def _confirm(driver) -> None:
    _until(driver, lambda d: d.switch_to.alert, 10, "the confirmation dialog").accept()


def test_deploy_watched_until_committed_then_a_rollback_with_its_reason(fleet: dict, browser) -> None:
    ctl: Controller = fleet["controller"]
    api = ctl.client("admin")
    tmp: Path = fleet["tmp"]
    d = browser
    # an operator's model: an ONNX file with real sample inputs
    model = tiny_onnx(tmp / "m.onnx", seed=3)
    samples = tmp / "s.npz"
    np.savez(samples, input=np.random.default_rng(2).standard_normal((24, 16)).astype(np.float32))
    fp32 = api.post("/compression/models", data={"name": "browser-mlp"},
                    files={"file": ("m.onnx", model.read_bytes()), "samples": ("s.npz", samples.read_bytes())}
                    ).json()["data"]["version"]

    # without a key the console says so (reads need a key on this controller)
    d.get(ctl.url + "/")
    _until(d, lambda d: "enter an API key" in _text(d, "#flash"), 15, "the missing-key message")
    d.find_element("id", "apikey").send_keys(ctl.keys["admin"])
    d.find_element("css selector", "#keyform button[type=submit]").click()
    _until(d, lambda d: "devices online" in _text(d, "#content").lower(), 15, "the overview")

    # devices: both agents online, live
    d.get(ctl.url + "/console/devices")
    for dev in fleet["devices"]:
        _until(d, lambda d, dev=dev: "online" in _text(d, f'tr[data-device="{dev}"]'), 30, f"{dev} online")
    _until(d, lambda d: "on" in d.find_element("id", "live").get_attribute("class"), 15, "the event stream")

    # compress from the console; the jobs page follows it live
    d.get(f"{ctl.url}/console/versions/{fp32['id']}")
    _until(d, lambda d: d.find_elements("id", "compress-btn"), 15, "the compress form")
    from selenium.webdriver.support.ui import Select

    Select(d.find_element("name", "technique")).select_by_visible_text("int8-static")
    d.find_element("name", "config").clear()
    d.find_element("name", "config").send_keys('{"calibration_samples": 16}')
    d.find_element("id", "compress-btn").click()
    _confirm(d)
    _until(d, lambda d: "queued" in _text(d, "#flash"), 15, "the job to be queued")
    job = api.get("/compression/jobs").json()["data"]["items"][0]
    d.get(ctl.url + "/console/jobs")
    _until(d, lambda d: "succeeded" in _text(d, f'tr[data-job="{job["id"]}"]'), 120, "the job to succeed")
    int8 = wait_job(api, job["id"])["result"]["version_id"]
    d.save_screenshot(str(SHOTS / "01-jobs.png"))

    # deploy from the console: canary then one wave, watched until every device committed
    d.get(f"{ctl.url}/console/versions/{int8}")
    _until(d, lambda d: d.find_elements("id", "deploy-btn"), 15, "the deploy form")
    Select(d.find_element("name", "strategy")).select_by_value("canary")
    d.find_element("id", "deploy-btn").click()
    _confirm(d)
    _until(d, lambda d: "/console/rollouts/" in d.current_url, 20, "the rollout page")
    started = time.monotonic()
    rid = d.current_url.rsplit("/", 1)[-1]
    while api.get(f"/rollouts/{rid}").json()["data"]["state"] == "running" and time.monotonic() - started < 180:
        time.sleep(0.05)
    decided = time.monotonic()
    _until(d, lambda d: "succeeded" in _text(d, "#rollout-state"), 180, "the rollout to succeed")
    assert _text(d, "#rollout-state").count("committed") == 1 and "committed 2" in _text(d, "#rollout-state")
    events = _text(d, "#rollout-events")
    assert "wave_started" in events and "gate_promote" in events
    shown = time.monotonic() - decided
    print(f"rollout committed on 2 devices in {decided - started:.1f} s; the open page showed it {shown:.2f} s "
          "after the API did (server-sent events, no reload)")
    assert shown < 10
    d.save_screenshot(str(SHOTS / "02-rollout-committed.png"))
    d.get(ctl.url + "/console/devices")
    for dev in fleet["devices"]:
        _until(d, lambda d, dev=dev: int8[:8] in _text(d, f'tr[data-device="{dev}"] .active-version'), 20,
               f"{dev} running the new version")
    d.save_screenshot(str(SHOTS / "03-devices.png"))
    d.get(f"{ctl.url}/console/devices/{fleet['devices'][0]}")  # the agent's telemetry, drawn by the vendored uPlot
    _until(d, lambda d: d.find_elements("css selector", ".telemetry .uplot canvas"), 30, "the telemetry chart")
    assert int8[:8] in _text(d, "#content")

    # a damaged build: 95 % of the weights zeroed. Devices refuse it; the console shows why.
    bad_job = api.post("/compression/prune", json={"version_id": fp32["id"], "technique": "prune-unstructured",
                                                  "config": {"sparsity": 0.95}}).json()["data"]
    bad = wait_job(api, bad_job["id"], timeout=120)["result"]["version_id"]
    d.get(f"{ctl.url}/console/versions/{bad}")
    _until(d, lambda d: d.find_elements("id", "deploy-btn"), 15, "the deploy form")
    d.find_element("id", "deploy-btn").click()
    _confirm(d)
    _until(d, lambda d: "/console/rollouts/" in d.current_url, 20, "the rollout page")
    _until(d, lambda d: "rolled_back" in _text(d, "#rollout-state"), 180, "the rollback")
    bad_rollout = d.current_url.rsplit("/", 1)[-1]
    reason = _text(d, "#rollout-reason")
    assert reason.startswith("abort:") and "regressed" in reason, reason
    d.save_screenshot(str(SHOTS / "04-rollout-rolled-back.png"))
    link = _until(d, lambda d: d.find_element("css selector", ".waves a.mono").get_attribute("href"), 10, "a link")
    d.get(link)  # the wave's deployment: each device's own reason (get, not click: a live swap may race a click)
    _until(d, lambda d: "regression_quality" in _text(d, "#deployment-devices"), 20, "the device's reason")
    d.save_screenshot(str(SHOTS / "05-deployment-reason.png"))
    assert all(api.get(f"/devices/{dev}").json()["data"]["active"]["version"] == int8 for dev in fleet["devices"])

    # the rollout's report, one click from the page, is self-contained
    report = httpx.get(f"{ctl.url}/api/v1/rollouts/{bad_rollout}/report",
                       headers={"Authorization": f"Bearer {ctl.keys['viewer']}"}, timeout=60)
    assert report.status_code == 200 and "aborted and rolled back" in report.text
    assert "regression_quality" in report.text and "rollout timeline" in report.text
    (SHOTS / "rollout-report.html").write_text(report.text)

    # the API docs render from the controller's own assets (this machine reaches nothing else)
    d.get(ctl.url + "/docs")
    _until(d, lambda d: len(d.find_elements("css selector", ".opblock")) > 20, 30, "Swagger UI's operations")
    d.save_screenshot(str(SHOTS / "07-swagger-ui.png"))
    d.get(ctl.url + "/redoc")
    _until(d, lambda d: "Start a rollout" in d.find_element("tag name", "body").text, 30, "ReDoc's operations")
    d.get((SHOTS / "rollout-report.html").as_uri())
    d.save_screenshot(str(SHOTS / "06-rollout-report.png"))
    api.close()

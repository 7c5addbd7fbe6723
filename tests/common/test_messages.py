from __future__ import annotations

import json

import pytest

from common.errors import ProtocolError, ReasonCode
from common.messages import (
    MAX_MESSAGE_BYTES,
    BenchMetrics,
    BenchReport,
    ChunkRequest,
    DeviceState,
    JobReport,
    ModelRef,
    Telemetry,
    decode,
)

SHA = "cd" * 32


def metrics(**kw) -> BenchMetrics:
    base = dict(latency_p50_ms=1.0, latency_p95_ms=2.0, load_ms=3.0, peak_rss_delta_mb=4.0,
                quality=0.999, quality_metric="cosine", runs=10)
    base.update(kw)
    return BenchMetrics(**base)


@pytest.mark.parametrize(
    "msg",
    [
        DeviceState(device_id="pi-1", session_id="s1", online=True, profile="rpi4"),
        ChunkRequest(deployment_id="d1", sha256=SHA, missing=[1, 2]),
        JobReport(device_id="pi-1", deployment_id="d1", seq=3, state="download"),
        Telemetry(device_id="pi-1", cpu_percent=1.0, mem_percent=2.0, rss_mb=30.0),
        BenchReport(
            device_id="pi-1",
            deployment_id="d1",
            candidate=ModelRef(model_id="m", version="v2", sha256=SHA, format="onnx"),
            candidate_metrics=metrics(),
            decision="commit",
        ),
    ],
)
def test_round_trip(msg):
    assert decode(type(msg), msg.to_bytes()) == msg
    assert json.loads(msg.to_bytes())["schema_version"] == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", ReasonCode.MALFORMED_PAYLOAD),
        (b"\xff\xfe", ReasonCode.MALFORMED_PAYLOAD),
        (b"[1,2]", ReasonCode.MALFORMED_PAYLOAD),
        (b'{"schema_version": 99, "deployment_id": "d", "sha256": "' + SHA.encode() + b'"}',
         ReasonCode.UNSUPPORTED_SCHEMA),
        (b'{"deployment_id": "d", "sha256": "' + SHA.encode() + b'"}', ReasonCode.UNSUPPORTED_SCHEMA),
        (b'{"schema_version": 1, "deployment_id": "../x", "sha256": "' + SHA.encode() + b'"}',
         ReasonCode.MALFORMED_PAYLOAD),
        (b'{"schema_version": 1, "deployment_id": "d", "sha256": "' + SHA.encode() + b'", "extra": 1}',
         ReasonCode.MALFORMED_PAYLOAD),
        (b"x" * (MAX_MESSAGE_BYTES + 1), ReasonCode.SIZE_EXCEEDED),
    ],
)
def test_bad_payloads_become_protocol_errors(payload, reason):
    with pytest.raises(ProtocolError) as err:
        decode(ChunkRequest, payload)
    assert err.value.reason is reason
    assert str(err.value).startswith(reason.value)


def test_desired_kind_is_additive_and_omitted_when_default():
    import json as _json

    from common.manifest import Manifest
    from common.messages import Desired, decode

    man = Manifest(model_id="m", version="v1", profile="rpi4", format="onnx", quality_metric="cosine", files=[])
    plain = Desired(deployment_id="d1", manifest=man)
    assert "kind" not in _json.loads(plain.to_bytes())  # agents predating the field still accept it
    assert decode(Desired, plain.to_bytes()).kind == "deploy"
    back = Desired(deployment_id="d2", manifest=man, kind="rollback")
    assert _json.loads(back.to_bytes())["kind"] == "rollback" and decode(Desired, back.to_bytes()).kind == "rollback"
    assert _json.loads(back.to_bytes())["schema_version"] == 2  # schema 2: desired carries a signed grant (#13 G)


def test_job_report_state_is_typed_on_the_wire():
    from common.errors import ProtocolError, ReasonCode
    from common.messages import JobReport, decode
    from common.update_states import UpdateState

    ok = JobReport(device_id="pi-1", deployment_id="d1", seq=1, state="commit")
    assert ok.state is UpdateState.COMMIT and b'"state":"commit"' in ok.to_bytes()
    bad = ok.to_bytes().replace(b'"commit"', b'"committed"')  # a name the agent never sends
    with pytest.raises(ProtocolError) as err:
        decode(JobReport, bad)
    assert err.value.reason is ReasonCode.MALFORMED_PAYLOAD

from __future__ import annotations

import pytest

from common import topics
from common.topics import TopicError, TopicKind

SHA = "ab" * 32


@pytest.mark.parametrize(
    ("topic", "kind", "extra"),
    [
        (topics.state("f1", "pi-1"), TopicKind.STATE, {}),
        (topics.caps("f1", "pi-1"), TopicKind.CAPS, {}),
        (topics.desired("f1", "pi-1"), TopicKind.DESIRED, {}),
        (topics.telemetry("f1", "pi-1"), TopicKind.TELEMETRY, {}),
        (topics.job("f1", "pi-1", "dep1"), TopicKind.JOB, {"deployment": "dep1"}),
        (topics.bench("f1", "pi-1", "dep1"), TopicKind.BENCH, {"deployment": "dep1"}),
        (topics.chunk_request("f1", "pi-1", SHA), TopicKind.CHUNK_REQUEST, {"sha256": SHA}),
        (topics.chunk("f1", "pi-1", SHA, 7), TopicKind.CHUNK, {"sha256": SHA, "index": 7}),
    ],
)
def test_build_parse_round_trip(topic, kind, extra):
    parsed = topics.parse(topic)
    assert (parsed.fleet, parsed.device, parsed.kind) == ("f1", "pi-1", kind)
    for key, value in extra.items():
        assert getattr(parsed, key) == value


@pytest.mark.parametrize("bad", ["a/b", "+", "#", "..", "a..b", "", "-x", "x" * 65, "a b"])
def test_ids_that_could_escape_a_topic_level_are_rejected(bad):
    with pytest.raises(TopicError, match="invalid device id"):
        topics.state("f1", bad)


@pytest.mark.parametrize(
    "topic",
    [
        "fl/v2/f/dev/a/state",
        "fl/v1/f/dev/a/unknown",
        "fl/v1/f/dev/a/art/notasha/req",
        "fl/v1/f/dev/a/art/" + SHA + "/chunk/x",
        "other/topic",
        "fl/v1/f/dev/a/job",
    ],
)
def test_parse_rejects_foreign_topics(topic):
    with pytest.raises(TopicError):
        topics.parse(topic)


def test_fleet_filters_match_what_builders_build():
    assert topics.matches(topics.fleet_filter("f", "job"), topics.job("f", "d1", "x"))
    assert topics.matches(topics.fleet_filter("f", "state"), topics.state("f", "d1"))
    assert topics.matches(topics.fleet_filter("f", "req"), topics.chunk_request("f", "d1", SHA))
    assert topics.matches(topics.fleet_filter("f", "chunk"), topics.chunk("f", "d1", SHA, 0))
    assert not topics.matches(topics.fleet_filter("f", "state"), topics.caps("f", "d1"))
    assert topics.matches(topics.device_filter("f", "d1"), topics.chunk("f", "d1", SHA, 3))
    assert not topics.matches(topics.device_filter("f", "d1"), topics.state("f", "d2"))
    assert not topics.matches("a/b/c", "a/b")


def test_negative_chunk_index_and_bad_sha_rejected():
    with pytest.raises(TopicError):
        topics.chunk("f", "d", SHA, -1)
    with pytest.raises(TopicError, match="sha256"):
        topics.chunk_request("f", "d", "ABC")


def test_topic_table_declares_every_kind_once_with_its_delivery_rules():
    from common.messages import DeviceState, JobReport, Telemetry

    assert set(topics.TOPICS) == set(TopicKind)
    assert topics.spec(TopicKind.STATE).payload is DeviceState and topics.spec("state").retain
    assert topics.spec(TopicKind.JOB).payload is JobReport and not topics.spec("job").retain
    assert topics.spec(TopicKind.TELEMETRY).payload is Telemetry and topics.spec("tm").qos == 0
    assert topics.spec(TopicKind.CHUNK).payload is None  # raw bytes
    device_kinds = {s.kind for s in topics.sent_by("device")}
    assert device_kinds == {TopicKind.STATE, TopicKind.CAPS, TopicKind.JOB, TopicKind.BENCH,
                            TopicKind.CHUNK_REQUEST, TopicKind.TELEMETRY}
    assert {s.kind for s in topics.sent_by("controller")} == {TopicKind.DESIRED, TopicKind.CHUNK}

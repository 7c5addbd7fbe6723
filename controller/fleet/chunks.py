"""Chunk server: answers agents' chunk requests with artifact chunks, on its own thread.

A device may only download blobs of artifacts deployed to it (checked against the
registry, positives cached). Requests are queued and served by one sender thread with a
bounded window of QoS1 chunks in flight, so a large artifact never blocks report intake
or floods memory; a re-request for chunks still queued adds nothing. The same thread runs
other slow work handed to it with :meth:`ChunkServer.defer` (re-publishing desired state
after a reconnect), because paho's network thread must never block.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from common import topics
from common.manifest import BlobRef, read_chunk
from common.messages import ChunkRequest
from common.topics import TopicKind
from controller.fleet.counters import Counters
from controller.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _ChunkJob:
    device_id: str
    ref: BlobRef
    indices: list[int]


class ChunkServer:
    """Serves artifact chunks of one fleet with the controller's paho client.

    Args:
        registry: blob files and the "was this blob deployed to this device" check.
        client: the controller's paho client.
        fleet: fleet id.
        window: QoS1 chunks in flight before the sender waits for acks.
        publish_timeout: longest wait for one ack when the window is full.
        counters: ``chunks_sent``, ``chunk_refused``, ``chunks_coalesced``, ...
    """

    def __init__(
        self,
        registry: Registry,
        client: mqtt.Client,
        fleet: str,
        *,
        window: int,
        publish_timeout: float,
        counters: Counters,
    ) -> None:
        self.registry = registry
        self.client = client
        self.fleet = fleet
        self.window = max(1, window)
        self.publish_timeout = publish_timeout
        self.counters = counters
        self._qos = topics.spec(TopicKind.CHUNK).qos
        self._jobs: queue.Queue[_ChunkJob | Callable[[], None] | None] = queue.Queue()
        self._inflight: deque[mqtt.MQTTMessageInfo] = deque()
        self._queued: dict[tuple[str, str], set[int]] = {}
        self._queued_lock = threading.Lock()
        self._authorized: dict[tuple[str, str], BlobRef] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the sender thread."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="fleet-chunks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the sender thread (what is queued is dropped: agents re-request)."""
        self._stopping = True
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def defer(self, task: Callable[[], None]) -> None:
        """Run ``task`` on the sender thread (work that must not block paho's network thread)."""
        self._jobs.put(task)

    def on_request(self, device_id: str, req: ChunkRequest) -> None:
        """Queue the chunks a device asked for, if the blob was deployed to it (paho thread)."""
        key = (device_id, req.sha256)
        ref = self._authorized.get(key)
        if ref is None:  # positives are cached: a blob once deployed to a device stays deployable to it
            ref = self.registry.devices.blob_for_device(device_id=device_id, sha256=req.sha256)
            if ref is not None:
                self._authorized[key] = ref
        if ref is None:
            self.counters.count("chunk_refused")
            log.warning("refused chunks of %s to %s: not part of any deployment to it", req.sha256[:12], device_id)
            return
        wanted = req.missing or list(range(ref.chunk_count))
        indices = sorted({i for i in wanted if 0 <= i < ref.chunk_count})
        if len(indices) != len(set(wanted)):
            self.counters.count("chunk_bad_index")
        with self._queued_lock:  # a re-request for chunks still queued adds nothing but load
            queued = self._queued.setdefault(key, set())
            fresh = [i for i in indices if i not in queued]
            queued.update(fresh)
        if len(fresh) < len(indices):
            self.counters.count("chunks_coalesced", len(indices) - len(fresh))
        if fresh:
            self._jobs.put(_ChunkJob(device_id, ref, fresh))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stopping:
                return
            if not isinstance(job, _ChunkJob):
                job()
                continue
            try:
                self._send(job)
            except Exception:  # noqa: BLE001 - the agent re-requests what it did not get
                self.counters.count("chunk_errors")
                log.exception("sending chunks of %s to %s failed", job.ref.sha256[:12], job.device_id)

    def _send(self, job: _ChunkJob) -> None:
        """Publish the chunks of one request; the in-flight window spans requests.

        Waiting for every request's last ack before the next one made a 1,000-device rollout
        serial on round trips (one per request); the shared window bounds memory the same way.
        """
        path = self.registry.blob_path(sha256=job.ref.sha256)
        window = self._inflight
        queued = self._queued.get((job.device_id, job.ref.sha256), set())
        for index in job.indices:
            if self._stopping:
                return
            with self._queued_lock:
                queued.discard(index)
            data = read_chunk(path, index, job.ref.chunk_size)
            topic = topics.chunk(self.fleet, job.device_id, job.ref.sha256, index)
            window.append(self.client.publish(topic, data, qos=self._qos))
            self.counters.count("chunks_sent")
            while len(window) >= self.window:
                window.popleft().wait_for_publish(self.publish_timeout)
        while window and window[0].is_published():
            window.popleft()

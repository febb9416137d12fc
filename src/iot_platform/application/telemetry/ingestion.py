"""IngestTelemetry: the one use case every protocol feeds.

A batch is checked reading by reading; a refused reading is reported and counted with its
reason and never takes the rest of its batch down with it. Accepted readings are published to
the telemetry stream, and the call returns only once they are durably handed on, so a protocol
adapter can acknowledge its source afterwards (MQTT PUBACK, CoAP 2.01, HTTP 201).

Duplicates are caught by a bounded window of recently stored keys: device + message_id, or
device + timestamp + metric for readings without an id. The window is recorded only after the
stream accepted the batch, so a batch that failed and is redelivered is not mistaken for a
duplicate. Beyond the window, the stores' idempotent writes still keep a redelivered reading
from being stored twice; it is just reported as stored.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from iot_platform.application.analytics.ports import AcceptedReadings
from iot_platform.application.limits import RateLimiter
from iot_platform.application.telemetry.model import (
    NS_PER_SECOND,
    Candidate,
    MetricValue,
    Outcome,
    Reading,
    Rejection,
    Status,
)
from iot_platform.application.telemetry.ports import (
    DeviceActivator,
    DeviceDirectory,
    DeviceInfo,
    IngestionMetrics,
)
from iot_platform.application.telemetry.stream import TelemetryStream
from iot_platform.domain.devices import DeviceStatus

log = logging.getLogger(__name__)


@dataclass
class BatchOrder:
    """A batch's place among batches ingested concurrently: it is published after ``after`` is
    set (the previous batch is in the stream), and sets ``queued`` once it is in the stream."""

    after: asyncio.Event | None
    queued: asyncio.Event = field(default_factory=asyncio.Event)

    async def done(self) -> None:
        """This batch is in the stream, or will never be (nothing accepted, or it failed): the
        next may go once every earlier one is."""
        if self.after is not None:
            await self.after.wait()
        self.queued.set()

METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
TAG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class IngestionLimits:
    max_future_skew_seconds: float = 300.0
    max_payload_bytes: int = 64 * 1024
    max_metrics: int = 100
    max_string_length: int = 1024
    max_tags: int = 32
    dedup_window: int = 100_000


class RecentKeys:
    """A bounded set that forgets its oldest keys first (memory stays flat under any load)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def add(self, key: Hashable) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)

    def __len__(self) -> int:
        return len(self._keys)


class _Refused(Exception):
    def __init__(self, reason: Rejection, detail: str) -> None:
        self.reason = reason
        self.detail = detail


class IngestTelemetry:
    def __init__(
        self,
        directory: DeviceDirectory,
        activator: DeviceActivator,
        stream: TelemetryStream,
        metrics: IngestionMetrics,
        limits: IngestionLimits = IngestionLimits(),
        clock_ns: Callable[[], int] = time.time_ns,
        rate: AcceptedReadings | None = None,
        budget: RateLimiter | None = None,
    ) -> None:
        self._budget = budget
        """Readings per device (one token each): a device over it is refused ``throttled``,
        in O(1), so a flooding device costs the others nothing."""
        self._directory = directory
        self._rate = rate
        self._activator = activator
        self._stream = stream
        self._metrics = metrics
        self._limits = limits
        self._clock_ns = clock_ns
        self._recent = RecentKeys(limits.dedup_window)

    async def ingest(
        self,
        candidates: Sequence[Candidate],
        protocol: str,
        authenticated_device: str | None = None,
        order: BatchOrder | None = None,
    ) -> list[Outcome]:
        """One outcome per candidate, in order. Raises only if the stream could not take the
        accepted readings; then nothing of the batch may be acknowledged to its source.

        ``order``: an adapter that ingests several batches at once (MQTT pipelines them) has
        them enter the stream in arrival order; only the waits for durability overlap. One
        device's readings then reach every consumer in the order they came, which the rule
        engine needs: it does not judge a reading older than one already judged.
        """
        try:
            return await self._ingest(candidates, protocol, authenticated_device, order)
        finally:
            if order is not None:
                await order.done()

    async def _ingest(
        self,
        candidates: Sequence[Candidate],
        protocol: str,
        authenticated_device: str | None,
        order: BatchOrder | None,
    ) -> list[Outcome]:
        now = self._clock_ns()
        outcomes: list[Outcome | None] = [None] * len(candidates)
        checked: list[tuple[int, Candidate, int, dict[str, MetricValue], dict[str, str]]] = []
        for i, candidate in enumerate(candidates):
            try:
                identity = authenticated_device if authenticated_device is not None else candidate.identity
                if identity is not None and candidate.device_id != identity:
                    raise _Refused(
                        Rejection.IDENTITY_MISMATCH,
                        f"authenticated as {identity!r}, not {candidate.device_id!r}",
                    )
                timestamp, values, tags = self._check(candidate, now)
                checked.append((i, candidate, timestamp, values, tags))
            except _Refused as refused:
                outcomes[i] = self._reject(candidate, protocol, refused.reason, refused.detail)

        devices = await self._directory.lookup({c.device_id for _, c, _, _, _ in checked})
        accepted: list[Reading] = []
        keys: list[Hashable] = []
        accepted_at: list[int] = []
        duplicates = 0
        in_batch: set[Hashable] = set()
        for i, candidate, timestamp, values, tags in checked:
            info = devices.get(candidate.device_id)
            refusal = self._status_refusal(candidate.device_id, info)
            if refusal is None and self._budget is not None:
                refusal = self._over_budget(candidate.device_id)
            if refusal is not None:
                outcomes[i] = self._reject(candidate, protocol, *refusal)
                continue
            assert info is not None
            fresh, reading_keys = self._fresh_metrics(candidate, timestamp, values, in_batch)
            if not fresh:
                outcomes[i] = Outcome(candidate.device_id, candidate.message_id, Status.DUPLICATE)
                duplicates += 1
                continue
            in_batch.update(reading_keys)
            keys.extend(reading_keys)
            accepted_at.append(i)
            accepted.append(
                Reading(
                    device_id=candidate.device_id,
                    timestamp_ns=timestamp,
                    metrics=fresh,
                    tags=tags,
                    message_id=candidate.message_id,
                    device_type=info.device_type,
                    protocol=protocol,
                )
            )
        if accepted:
            # Activation first: whoever can read a stored reading finds its device active.
            await self._activate_new_devices(accepted, devices)
            if order is not None and order.after is not None:
                await order.after.wait()
            await self._stream.publish(accepted, order.queued.set if order is not None else None)
            self._metrics.accepted(protocol, len(accepted))
            if self._rate is not None:
                self._rate.add(len(accepted))
            for key in keys:
                self._recent.add(key)
        if duplicates:
            self._metrics.duplicates(protocol, duplicates)
        for i in accepted_at:
            outcomes[i] = Outcome(candidates[i].device_id, candidates[i].message_id, Status.STORED)
        return [o for o in outcomes if o is not None]

    def _reject(
        self, candidate: Candidate, protocol: str, reason: Rejection, detail: str
    ) -> Outcome:
        self._metrics.rejected(protocol, reason)
        return Outcome(candidate.device_id, candidate.message_id, Status.REJECTED, reason, detail)

    def _check(
        self, candidate: Candidate, now: int
    ) -> tuple[int, dict[str, MetricValue], dict[str, str]]:
        limits = self._limits
        if candidate.rejection is not None:
            raise _Refused(candidate.rejection, candidate.detail or candidate.rejection.value)
        if candidate.payload_bytes > limits.max_payload_bytes:
            raise _Refused(
                Rejection.PAYLOAD_TOO_LARGE,
                f"{candidate.payload_bytes} bytes; the limit is {limits.max_payload_bytes}",
            )
        timestamp = now if candidate.timestamp_ns is None else candidate.timestamp_ns
        if timestamp < 0:
            raise _Refused(Rejection.INVALID_TIMESTAMP, "timestamp is before 1970")
        if timestamp > now + int(limits.max_future_skew_seconds * NS_PER_SECOND):
            raise _Refused(
                Rejection.TIMESTAMP_IN_FUTURE,
                f"timestamp is more than {limits.max_future_skew_seconds:g}s ahead of the platform",
            )
        if not candidate.metrics:
            raise _Refused(Rejection.NO_METRICS, "the reading carries no metrics")
        if len(candidate.metrics) > limits.max_metrics:
            raise _Refused(Rejection.TOO_MANY_METRICS, f"more than {limits.max_metrics} metrics")
        values = {name: self._value(name, value) for name, value in candidate.metrics.items()}
        return timestamp, values, self._tags(candidate.tags)

    def _value(self, name: object, value: object) -> MetricValue:
        if not isinstance(name, str) or not METRIC_NAME.match(name):
            raise _Refused(Rejection.INVALID_METRIC_NAME, f"metric name {name!r} is not an identifier")
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            if abs(value) > 2**63 - 1:
                raise _Refused(Rejection.INVALID_METRIC_VALUE, f"{name}: integer out of range")
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _Refused(Rejection.NON_FINITE_NUMBER, f"{name} is {value}")
            return value
        if isinstance(value, str):
            if len(value) > self._limits.max_string_length:
                raise _Refused(
                    Rejection.INVALID_METRIC_VALUE,
                    f"{name}: strings are limited to {self._limits.max_string_length} characters",
                )
            return value
        raise _Refused(
            Rejection.INVALID_METRIC_VALUE,
            f"{name}: a metric is a number, a boolean or a string, not {type(value).__name__}",
        )

    def _tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        if len(tags) > self._limits.max_tags:
            raise _Refused(Rejection.INVALID_TAGS, f"more than {self._limits.max_tags} tags")
        for key, value in tags.items():
            if not isinstance(key, str) or not TAG_KEY.match(key):
                raise _Refused(Rejection.INVALID_TAGS, f"tag key {key!r} is not an identifier")
            if not isinstance(value, str) or len(value) > 256:
                raise _Refused(Rejection.INVALID_TAGS, f"tag {key}: value must be a short string")
        return dict(tags)

    def _over_budget(self, device_id: str) -> tuple[Rejection, str] | None:
        assert self._budget is not None
        wait = self._budget.hit(device_id)
        if wait <= 0:
            return None
        return Rejection.THROTTLED, f"device {device_id!r} is over its reading budget; retry in {wait:.1f}s"

    @staticmethod
    def _status_refusal(device_id: str, info: DeviceInfo | None) -> tuple[Rejection, str] | None:
        if info is None:
            return Rejection.UNKNOWN_DEVICE, f"device {device_id!r} is not registered"
        if info.status is DeviceStatus.SUSPENDED:
            return Rejection.DEVICE_SUSPENDED, f"device {device_id!r} is suspended"
        if info.status is DeviceStatus.DECOMMISSIONED:
            return Rejection.DEVICE_DECOMMISSIONED, f"device {device_id!r} is decommissioned"
        return None

    def _fresh_metrics(
        self,
        candidate: Candidate,
        timestamp: int,
        values: dict[str, MetricValue],
        in_batch: set[Hashable],
    ) -> tuple[dict[str, MetricValue], list[Hashable]]:
        """The metrics not seen before, and the keys that will mark them as seen."""
        if candidate.message_id is not None:
            id_key = (candidate.device_id, "id", candidate.message_id)
            if id_key in self._recent or id_key in in_batch:
                return {}, []
            return values, [id_key]
        fresh: dict[str, MetricValue] = {}
        keys: list[Hashable] = []
        for name, value in values.items():
            key = (candidate.device_id, timestamp, name)
            if key not in self._recent and key not in in_batch:
                fresh[name] = value
                keys.append(key)
        return fresh, keys

    async def _activate_new_devices(
        self, accepted: Sequence[Reading], devices: Mapping[str, DeviceInfo]
    ) -> None:
        waiting = {
            r.device_id
            for r in accepted
            if devices[r.device_id].status in (DeviceStatus.REGISTERED, DeviceStatus.PROVISIONED)
        }
        for device_id in sorted(waiting):
            try:
                await self._activator.activate(device_id)
            except Exception:  # the readings are stored; activation is retried on the next one
                log.exception("could not activate device %s", device_id)
                self._directory.forget(device_id)
            else:
                # Not forget: the registry shows the activation only once its projection has
                # run, and until then every batch would activate the device again.
                self._directory.activated(device_id, replace(devices[device_id], status=DeviceStatus.ACTIVE))

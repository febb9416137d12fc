"""The storage writer: the durable consumer of the telemetry stream."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from iot_platform.application.telemetry.model import Reading
from iot_platform.application.telemetry.ports import PermanentWriteError, TimeSeriesStore

log = logging.getLogger(__name__)


class StorageWriter:
    """Writes each batch to the time-series store.

    A transient failure is raised, and the stream retries the batch with back-off. A permanent
    one (``PermanentWriteError``) must not stall the pipeline behind one bad reading: the batch
    is split in halves until the readings the store refuses are isolated; those are dead-lettered
    (logged and counted) and everything else is stored.
    """

    name = "storage"

    def __init__(
        self,
        store: TimeSeriesStore,
        dead_letter: Callable[[Reading, str], None] = lambda reading, reason: None,
    ) -> None:
        self._store = store
        self._dead_letter = dead_letter

    async def handle(self, readings: Sequence[Reading]) -> None:
        try:
            await self._store.write(readings)
        except PermanentWriteError as refused:
            if len(readings) == 1:
                log.warning("dead-lettered a reading of %s: %s", readings[0].device_id, refused)
                self._dead_letter(readings[0], str(refused))
                return
            middle = len(readings) // 2
            await self.handle(readings[:middle])
            await self.handle(readings[middle:])

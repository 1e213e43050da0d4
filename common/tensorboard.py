"""A framework-free TensorBoard scalar writer, used by both trainers so their tags are identical.

Uses the `tensorboard` package's event-file writer (no TensorFlow import); imported lazily.
"""

from __future__ import annotations

import time
from pathlib import Path

from common.rundir import TENSORBOARD_TAGS


class ScalarWriter:
    def __init__(self, log_dir: Path):
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary = Event, Summary
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(log_dir))

    def epoch(self, row: dict) -> None:
        """Write one history row (common.rundir.HISTORY_COLUMNS) under the shared tag names."""
        values = [self._summary.Value(tag=tag, simple_value=float(row[key]))
                  for key, tag in TENSORBOARD_TAGS.items() if row.get(key) is not None]
        self._writer.add_event(self._event(wall_time=time.time(), step=int(row["epoch"]),
                                           summary=self._summary(value=values)))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

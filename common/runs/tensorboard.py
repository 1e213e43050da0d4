"""A framework-free TensorBoard scalar writer, used by both trainers so their tags are identical.

It writes the event-file records itself with tensorboard's RecordWriter over a plain file:
tensorboard's own EventFileWriter would import TensorFlow (for gfile) into the PyTorch trainer.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from common.runs.rundir import TENSORBOARD_TAGS


class ScalarWriter:
    def __init__(self, log_dir: Path):
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event, self._summary = Event, Summary
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{time.monotonic_ns()}"
        self._file = (Path(log_dir) / name).open("wb")
        self._records = RecordWriter(self._file)
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())
        self._records.flush()

    def epoch(self, row: dict) -> None:
        """Write one history row (common.runs.rundir.HISTORY_COLUMNS) under the shared tag names."""
        values = [self._summary.Value(tag=tag, simple_value=float(row[key]))
                  for key, tag in TENSORBOARD_TAGS.items() if row.get(key) is not None]
        self._write(self._event(wall_time=time.time(), step=int(row["epoch"]), summary=self._summary(value=values)))

    def close(self) -> None:
        self._records.close()

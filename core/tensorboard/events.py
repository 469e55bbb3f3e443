"""TensorBoard event files, written without TensorFlow.

A trial's training and validation metrics become scalars that TensorBoard plots: tag
``train/<metric>`` or ``val/<metric>``, step = batches trained. Only numbers are written,
NaN and infinities included (also as the master's strings ``"NaN"``, ``"Infinity"``,
``"-Infinity"``); ``bool`` and anything else a metric may hold, such as lists or other
strings, are left out. TensorBoard's scalars are 32-bit floats.

The format, as TensorBoard reads it:

- A file ``events.out.tfevents.<seconds>.<host>.<pid>.<n>.detlite`` is a sequence of
  records, each framed as TFRecord does: the payload's length (u64, little-endian), the
  masked CRC-32C of those 8 bytes (u32), the payload, the masked CRC-32C of the payload
  (u32). Masking rotates the CRC right by 15 bits and adds ``0xA282EAD8``. The suffix keeps
  the name apart from a file that a trial's own SummaryWriter opens in the same folder in
  the same second: TensorFlow's writers name theirs the same way, counter included.
- Each payload is a serialized ``Event`` protocol buffer: ``wall_time`` (field 1, double),
  ``step`` (2, int64) and one of ``file_version`` (3, string) or ``summary`` (5, a
  ``Summary`` of repeated ``Value`` (1), each with ``tag`` (1, string) and ``simple_value``
  (2, float)). The first event of a file carries ``file_version`` ``brain.Event:2``, which
  also tells TensorBoard that a step lower than one it has seen (a trial restarted from an
  earlier checkpoint) replaces what came after it.

``EventFileWriter`` keeps encoded records in memory and appends them to its file on
``flush``, so recording a report costs a few microseconds and no system call.
``read_events`` decodes a file back, checking every CRC (the tests use it; so can anyone
inspecting a file without TensorBoard).
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detlite.errors import DetliteError

__all__ = [
    "FILE_VERSION",
    "Event",
    "EventFileError",
    "EventFileWriter",
    "TensorBoardUnavailable",
    "crc32c",
    "masked_crc32c",
    "read_events",
    "scalar_values",
]

#: The version string of the first event of every file.
FILE_VERSION = "brain.Event:2"

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_FLUSH_BYTES = 1 << 16
_counter = itertools.count()
# The master's (and ``json_safe``'s) spelling of the floats JSON lacks.
_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class TensorBoardUnavailable(DetliteError):
    """``detlite tensorboard`` was asked for, but TensorBoard is not installed."""

    def __init__(self) -> None:
        super().__init__("TensorBoard is not installed: pip install tensorboard")


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TFRecord framing uses it."""
    crc = _U32
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _U32


def masked_crc32c(data: bytes) -> int:
    """The CRC as stored in a record: rotated right by 15 bits, plus a constant."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


# -- protocol buffer encoding ---------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values take ten bytes, as protobuf writes them
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field_number: int, wire_type: int) -> bytes:
    return _varint(field_number << 3 | wire_type)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _key(field_number, 2) + _varint(len(payload)) + payload


def _event_header(wall_time: float, step: int) -> bytes:
    return _key(1, 1) + _DOUBLE.pack(wall_time) + _key(2, 0) + _varint(step)


def _summary(values: Mapping[str, float]) -> bytes:
    parts = []
    for tag, value in values.items():
        item = _length_delimited(1, tag.encode("utf-8")) + _key(2, 5) + _FLOAT.pack(value)
        parts.append(_length_delimited(1, item))
    return b"".join(parts)


def _frame(payload: bytes) -> bytes:
    length = _LENGTH.pack(len(payload))
    return length + _CRC.pack(masked_crc32c(length)) + payload + _CRC.pack(masked_crc32c(payload))


def scalar_values(prefix: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    """``{prefix/name: value}`` for the metrics that are real numbers (see the module doc)."""
    values = {}
    for name, value in metrics.items():
        if isinstance(value, str) and value in _SPECIAL:
            value = _SPECIAL[value]
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        number = float(value)
        # A float32 overflows to infinity anyway; say so rather than let struct refuse it.
        if math.isfinite(number) and abs(number) > 3.4e38:
            number = math.copysign(math.inf, number)
        values[f"{prefix}/{name}"] = number
    return values


class EventFileWriter:
    """One event file in ``directory``, created on the first ``flush``.

    ``add_scalars`` encodes at once and keeps the bytes; ``flush`` appends them to the file
    (and does so by itself once 64 KiB are waiting). Not thread-safe: one writer per thread.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        name = (
            f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_counter)}.detlite"
        )
        self.path = self.directory / name
        version = _event_header(time.time(), 0) + _length_delimited(3, FILE_VERSION.encode())
        self._pending = bytearray(_frame(version))
        self._closed = False

    def add_scalars(
        self, step: int, values: Mapping[str, float], wall_time: float | None = None
    ) -> None:
        """One event at ``step`` with a scalar per tag; nothing for an empty mapping."""
        if self._closed:
            raise ValueError(f"event file {self.path} is closed")
        if not values:
            return
        header = _event_header(time.time() if wall_time is None else wall_time, step)
        self._pending += _frame(header + _length_delimited(5, _summary(values)))
        if len(self._pending) >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Append what is waiting to the file."""
        if not self._pending:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as fh:
            fh.write(self._pending)
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._closed = True


# -- reading --------------------------------------------------------------------------------


class EventFileError(ValueError):
    """An event file is truncated, fails a CRC check, or holds something not an Event."""


@dataclass
class Event:
    """A decoded event: its time, step, and either a file version or scalar values."""

    wall_time: float = 0.0
    step: int = 0
    file_version: str | None = None
    scalars: dict[str, float] = field(default_factory=dict)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise EventFileError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """``(field number, wire type, value)`` of each field of a serialized message."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise EventFileError(f"unsupported wire type {wire} for field {number}")
        if pos > len(data):
            raise EventFileError(f"field {number} runs past the end of its message")
        yield number, wire, value


def _decode_event(payload: bytes) -> Event:
    event = Event()
    for number, wire, value in _fields(payload):
        if number == 1 and wire == 1:
            event.wall_time = _DOUBLE.unpack(value)[0]
        elif number == 2 and wire == 0:
            event.step = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 3 and wire == 2:
            event.file_version = value.decode("utf-8")
        elif number == 5 and wire == 2:
            for item_number, _, item in _fields(value):
                if item_number != 1:
                    continue
                tag, scalar = "", None
                for n, w, v in _fields(item):
                    if n == 1 and w == 2:
                        tag = v.decode("utf-8")
                    elif n == 2 and w == 5:
                        scalar = _FLOAT.unpack(v)[0]
                if scalar is not None:
                    event.scalars[tag] = scalar
    return event


def read_events(path: str | os.PathLike[str]) -> list[Event]:
    """Every event of the file at ``path``; ``EventFileError`` names the first bad record."""
    data = Path(path).read_bytes()
    events = []
    pos = 0
    while pos < len(data):
        header = data[pos : pos + 12]
        if len(header) < 12:
            raise EventFileError(f"{path}: truncated record header at byte {pos}")
        length_bytes = header[:8]
        if _CRC.unpack(header[8:])[0] != masked_crc32c(length_bytes):
            raise EventFileError(f"{path}: bad length CRC at byte {pos}")
        (length,) = _LENGTH.unpack(length_bytes)
        payload = data[pos + 12 : pos + 12 + length]
        crc = data[pos + 12 + length : pos + 16 + length]
        if len(payload) < length or len(crc) < 4:
            raise EventFileError(f"{path}: truncated record at byte {pos}")
        if _CRC.unpack(crc)[0] != masked_crc32c(payload):
            raise EventFileError(f"{path}: bad payload CRC at byte {pos}")
        events.append(_decode_event(payload))
        pos += 16 + length
    return events

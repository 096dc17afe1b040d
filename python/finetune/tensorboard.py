"""TensorBoard event files without TensorBoard: scalar summaries written in the TFRecord + protobuf format.

    tensorboard --logdir runs/        # shows every run's tensorboard/ folder

Only what scalar curves need is encoded (Event: wall_time, step, file_version, summary; Summary.Value: tag,
simple_value); files load in TensorBoard and in tensorboard's EventAccumulator.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = _varint((number << 3) | wire)
    return key + (_varint(len(payload)) + payload if wire == 2 else payload)


def _event(wall_time: float, step: int = 0, file_version: str | None = None, scalars: dict[str, float] | None = None) -> bytes:
    body = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
    if file_version is not None:
        body += _field(3, 2, file_version.encode())
    if scalars:
        values = b"".join(_field(1, 2, _field(1, 2, tag.encode()) + _field(2, 5, struct.pack("<f", value)))
                          for tag, value in scalars.items())
        body += _field(5, 2, values)
    return body


def _record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked(length)) + data + struct.pack("<I", _masked(data))


def write_scalars(directory: str | os.PathLike, history: list[dict[str, float]]) -> Path:
    """One event file with every numeric column of `history` as a scalar curve over epochs (step = epoch + 1)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    path = directory / f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
    with open(path, "wb") as f:
        f.write(_record(_event(now, file_version="brain.Event:2")))
        for record in history:
            scalars = {k.replace("val_", "validation/").replace("train_", "train/"): float(v)
                       for k, v in record.items() if k != "epoch" and isinstance(v, (int, float))}
            f.write(_record(_event(now, step=int(record["epoch"]) + 1, scalars=scalars)))
    return path


def read_records(path: str | os.PathLike) -> list[bytes]:
    """The records of an event file, each CRC checked (for tests and tools)."""
    data, records, offset = Path(path).read_bytes(), [], 0
    while offset < len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[offset + 8:offset + 12])[0] != _masked(header):
            raise ValueError(f"'{path}': bad length checksum at byte {offset}")
        body = data[offset + 12:offset + 12 + length]
        if struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])[0] != _masked(body):
            raise ValueError(f"'{path}': bad data checksum at byte {offset}")
        records.append(body)
        offset += 16 + length
    return records

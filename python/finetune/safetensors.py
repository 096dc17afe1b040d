"""A small reader and writer of the safetensors format (no pickle, no extra dependency).

Layout: an 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and byte
range, then the raw little-endian data. Files written here load with the `safetensors` package too.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import torch

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
_FROM_CODE = {code: dtype for dtype, code in _DTYPES.items()}


def save(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Writes `tensors` to `path` and fsyncs it (the caller makes the write atomic by renaming)."""
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    chunks, offset = [], 0
    for name, tensor in tensors.items():
        t = tensor.detach().to("cpu").contiguous()
        if t.dtype not in _DTYPES:
            raise TypeError(f"tensor {name!r} has dtype {t.dtype}, which safetensors cannot store")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def load(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) from `path`. A truncated or malformed file is a ValueError naming it."""
    raw = Path(path).read_bytes()
    try:
        (length,) = struct.unpack("<Q", raw[:8])
        if length > len(raw) - 8:
            raise ValueError("header runs past the end of the file")
        header = json.loads(raw[8:8 + length])
        metadata = header.pop("__metadata__", {}) or {}
        body = memoryview(raw)[8 + length:]
        tensors = {}
        for name, info in header.items():
            begin, end = info["data_offsets"]
            dtype = _FROM_CODE[info["dtype"]]
            if end > len(body) or begin > end:
                raise ValueError(f"tensor {name!r} runs past the end of the file")
            flat = torch.from_numpy(np.frombuffer(body[begin:end], dtype=np.uint8).copy())
            shape = info["shape"]
            tensors[name] = flat.view(dtype).reshape(shape) if flat.numel() else torch.empty(shape, dtype=dtype)
    except (struct.error, json.JSONDecodeError, KeyError, TypeError, RuntimeError, ValueError) as error:
        raise ValueError(f"'{path}' is not a valid safetensors file: {error}") from None
    return tensors, metadata

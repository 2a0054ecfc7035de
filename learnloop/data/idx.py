"""Reader for the IDX format of MNIST, Fashion-MNIST and KMNIST (LeCun et al., 1998).

Layout: 2 zero bytes, a type code (0x08 = uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), the number of dimensions d, then d big-endian uint32 sizes, then the data in C order.
Files may be gzip-compressed (`.gz`). A truncated or malformed file raises `CorruptFileError` naming it.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from learnloop.errors import CorruptFileError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzip'd) into a NumPy array of its stored shape."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise CorruptFileError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:
        raise CorruptFileError(f"{path}: truncated or corrupt gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise CorruptFileError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptFileError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise CorruptFileError(
            f"{path}: truncated or corrupt IDX file (expected {expected} data bytes for shape {shape}, "
            f"found {len(raw) - header})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as an IDX file (gzip'd when the name ends in .gz). Used by tests and exporters."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}
    a = np.ascontiguousarray(array)
    code = codes.get(a.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {a.dtype}")
    data = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    data += a.astype(np.dtype(_DTYPES[code])).tobytes()
    from learnloop.utils.io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)

"""Reader for the IDX format of MNIST, Fashion-MNIST and KMNIST (LeCun et al., 1998).

Layout: 2 zero bytes, a type code (0x08 = uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), the number of dimensions d, then d big-endian uint32 sizes, then the data in C order.
Files may be gzip-compressed or not, whatever their name: the first two bytes decide (0x1f 0x8b is gzip).

Every file is untrusted: only a regular file is opened (a FIFO or a folder is refused, never read), the
header's size is checked against the file's size before anything is allocated (a plain file must hold
exactly the declared bytes; a gzip stream cannot expand more than `MAX_GZIP_RATIO` times), and a
truncated, padded or malformed file raises a one-line `CorruptFileError` naming it.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from learnloop.errors import CorruptFileError
from learnloop.utils.io import open_regular

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_GZIP_RATIO = 1032            # deflate's limit: one 258-byte match per ~2 bits, plus block overhead
GZIP_MAGIC = b"\x1f\x8b"


def _corrupt(path: Path, reason: str) -> CorruptFileError:
    return CorruptFileError(f"{path}: {reason}", path=path, reason=reason)


def _read_exact(stream, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(min(n - got, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _parse(path: Path, stream, file_size: int, compressed: bool) -> np.ndarray:
    """Header, then the declared size checked against what a file of `file_size` bytes can hold, then data."""
    head = _read_exact(stream, 4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
        raise _corrupt(path, "not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_DTYPES[head[2]]), head[3]
    dims = _read_exact(stream, 4 * ndim)
    if len(dims) < 4 * ndim:
        raise _corrupt(path, "truncated IDX header")
    shape = struct.unpack(f">{ndim}I", dims)
    expected = math.prod(shape) * dtype.itemsize          # Python ints: no overflow
    room = file_size * MAX_GZIP_RATIO if compressed else file_size - 4 - 4 * ndim
    if expected > room:
        holds = (f"more than {file_size} bytes of gzip data can hold" if compressed
                 else f"the file holds {max(room, 0)}")
        raise _corrupt(path, f"truncated or corrupt IDX file (header declares shape {shape}, {expected} data "
                             f"bytes; {holds})")
    data = _read_exact(stream, expected + 1)
    if len(data) != expected:
        found = "more" if len(data) > expected else str(len(data))
        raise _corrupt(path, f"truncated or corrupt IDX file (expected {expected} data bytes for shape "
                             f"{shape}, found {found})")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip'd or plain, told apart by content) into a NumPy array of its stored shape."""
    path = Path(path)
    try:
        with open_regular(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            compressed = f.read(2) == GZIP_MAGIC
            f.seek(0)
            if not compressed:
                return _parse(path, f, size, False)
            with gzip.GzipFile(fileobj=f, mode="rb") as z:
                return _parse(path, z, size, True)
    except FileNotFoundError:
        raise _corrupt(path, "file not found") from None
    except IsADirectoryError:
        raise _corrupt(path, "is a folder, not a regular file") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise _corrupt(path, f"truncated or corrupt gzip data ({e})") from None
    except OSError as e:
        raise _corrupt(path, f"cannot read ({e.strerror or e})") from None


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

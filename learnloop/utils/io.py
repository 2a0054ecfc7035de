"""File I/O for run folders: atomic writes, strict JSON, and reads that treat every file as untrusted.

Writing: every writer goes to a temporary file `.<name>.<8 random chars>.tmp` in the destination's folder
(created with the umask-respecting mode 0666 & ~umask, like any other file), flushes and fsyncs it, then
`os.replace`s it over the destination (atomic on POSIX and Windows for files on one filesystem). A crash
or Ctrl-C never leaves a half-written file behind; a killed process may leave the temporary file, which
`is_temp_name` recognises (`RunFolder.remove_stale_temp_files` removes those, and only those). Every
file comes out with the same mode, whatever the writer inside does (safetensors makes 0600). An OSError
raised while writing (a full disk: ENOSPC, EDQUOT, EFBIG) always names the destination file.

JSON is written strictly (RFC 8259): a non-finite float (nan, inf) becomes `null`, and the writer returns
where that happened so the caller can log it. Reading accepts both (`NaN`/`Infinity` tokens of older
files, and `null`).

Reading: `open_regular` refuses anything but a regular file (a FIFO would block forever, a device never
ends): it checks with os.stat before opening, opens with O_NONBLOCK and checks again with fstat.
`read_json` also bounds the size, requires UTF-8 and bounds the nesting depth (a deeply nested document
would exhaust the recursion limit); every failure is a one-line `CorruptFileError` naming the file.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path

from learnloop.errors import CorruptFileError

MAX_JSON_BYTES = 64 * 2 ** 20        # config.json, metrics.json, eval.json, data.json: far below this
MAX_JSON_DEPTH = 64                  # a resolved config nests 3-4 levels; a checkpoint tree about 8

_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")     # ours, and tempfile.mkstemp's of older versions
_SAFETENSORS_TEMP = re.compile(r"\.tmp[A-Za-z0-9]{6}")    # safetensors >= 0.7 writes .tmpXXXXXX, then renames


# --- atomic writes ---------------------------------------------------------------------------------------
def is_temp_name(name: str) -> bool:
    """True for the names of the temporary files an atomic write makes: `atomic_path`'s
    `.<destination name>.<8 chars>.tmp`, and `.tmpXXXXXX` of safetensors, which writes a checkpoint to
    such a file and renames it onto `atomic_path`'s."""
    return _TEMP_NAME.fullmatch(name) is not None or _SAFETENSORS_TEMP.fullmatch(name) is not None


def with_filename(e: OSError, path, tmp=None) -> OSError:
    """The same error naming the destination `path` when it named no file (write() and fsync() errors
    name none) or only the temporary file; an error about another file keeps its name."""
    if e.errno is None or (e.filename is not None and (tmp is None or str(e.filename) != str(tmp))):
        return e
    return OSError(e.errno, e.strerror or os.strerror(e.errno), str(path))


def _create_temp(path: Path) -> Path:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)          # 0666 & ~umask: the mode every other file gets
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); not possible, and not needed, everywhere."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed and
    the destination is untouched. OSErrors name `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp(path)
    except OSError as e:
        raise with_filename(e, path) from None
    try:
        mode = stat.S_IMODE(os.stat(tmp).st_mode)    # 0666 & ~umask
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            if stat.S_IMODE(os.fstat(f.fileno()).st_mode) != mode:
                os.chmod(tmp, mode)              # writers that replace the file (safetensors: 0600) get it back
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise with_filename(e, path, tmp) from None
        raise
    _fsync_folder(path.parent)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


# --- strict JSON -----------------------------------------------------------------------------------------
def _plain(o):
    """Tensors, NumPy values, tuples, sets and paths as plain JSON values (not yet checked for finiteness)."""
    if hasattr(o, "item") and getattr(o, "ndim", 0) == 0:
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_json_value(obj, where: str = "") -> tuple[object, list[tuple[str, float]]]:
    """`obj` as strict-JSON-ready values, non-finite floats replaced by None; also returns the
    [(where, original value)] replacements, e.g. [("val_loss", nan)]."""
    replaced: list[tuple[str, float]] = []

    def walk(o, at: str):
        if isinstance(o, bool) or o is None or isinstance(o, (int, str)):
            return o
        if isinstance(o, float):
            if math.isfinite(o):
                return o
            replaced.append((at or "value", o))
            return None
        if isinstance(o, dict):
            return {k: walk(v, f"{at}.{k}" if at else str(k)) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v, f"{at}[{i}]") for i, v in enumerate(o)]
        return walk(_plain(o), at)

    return walk(obj, where), replaced


def dumps_strict(obj, **kwargs) -> tuple[str, list[tuple[str, float]]]:
    """json.dumps of `to_json_value(obj)`: never writes NaN/Infinity (strict parsers reject them)."""
    value, replaced = to_json_value(obj)
    return json.dumps(value, allow_nan=False, **kwargs), replaced


def write_json(path, obj) -> list[tuple[str, float]]:
    """Write `obj` as strict JSON, atomically. Returns where a non-finite float was written as null."""
    text, replaced = dumps_strict(obj, indent=2, sort_keys=False)
    write_text(path, text + "\n")
    return replaced


def _json_default(o):
    """`default=` for json.dumps (kept for callers that encode themselves; prefer `dumps_strict`)."""
    return _plain(o)


# --- untrusted reads -------------------------------------------------------------------------------------
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _not_regular(path, mode: int) -> CorruptFileError:
    kind = _kind(mode)
    reason = f"is {kind}, not a regular file" if kind.startswith("a ") else kind
    return CorruptFileError(f"{path}: {reason}", path=path, reason=reason)


def open_regular(path, mode: str = "rb", encoding: str | None = None, errors: str | None = None):
    """open() that refuses anything but a regular file (symlinks to one are fine), without blocking.

    `mode` is "rb", "r", "ab" or "a" (append creates the file when it is missing)."""
    if mode not in ("rb", "r", "ab", "a"):
        raise ValueError(f"open_regular: unsupported mode {mode!r}")
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if mode[0] == "r":
            raise
    else:
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
    flags = os.O_RDONLY if mode[0] == "r" else os.O_WRONLY | os.O_APPEND | os.O_CREAT
    nonblock = getattr(os, "O_NONBLOCK", 0)
    flags |= nonblock | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ENXIO:            # swapped for a FIFO (no reader) or a socket since the stat
            raise CorruptFileError(f"{path}: is a FIFO or socket, not a regular file", path=path,
                                   reason="is a FIFO or socket, not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        if nonblock:
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~nonblock)
        return os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None,
                         errors=errors if "b" not in mode else None)
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path, max_bytes: int) -> bytes:
    """A regular file's bytes; a missing, special or larger file is a CorruptFileError naming it."""
    try:
        with open_regular(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise CorruptFileError(f"{path}: not found", path=path, reason="not found") from None
    except IsADirectoryError:
        raise CorruptFileError(f"{path}: is a folder, not a file", path=path, reason="is a folder") from None
    if len(data) > max_bytes:
        reason = f"larger than {max_bytes} bytes; not a file learnloop wrote"
        raise CorruptFileError(f"{path}: {reason}", path=path, reason=reason)
    return data


def decode_utf8(data: bytes, where) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        reason = f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
        raise CorruptFileError(f"{where}: {reason}", path=where, reason=reason) from None


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if arrays/objects in JSON `text` nest deeper than `limit` (brackets inside strings ignored)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for m in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text, re.S):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > limit:
                return True
        elif c in "]}":
            depth -= 1
    return False


def parse_json(text: str, where, max_depth: int = MAX_JSON_DEPTH):
    """json.loads with bounded nesting; any failure is a one-line CorruptFileError naming `where`."""
    reason = None
    if json_depth_exceeds(text, max_depth):
        reason = f"JSON nested deeper than {max_depth} levels"
    else:
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            reason = f"not valid JSON ({e.msg} at line {e.lineno})"
        except RecursionError:
            reason = "JSON nested too deeply"
        except ValueError:                              # e.g. an integer with more than 4300 digits
            reason = "not valid JSON (a number too long to read)"
    raise CorruptFileError(f"{where}: {reason}", path=where, reason=reason)


def read_json(path, max_bytes: int = MAX_JSON_BYTES):
    """Parse a JSON file as untrusted input (regular file, bounded size and depth, UTF-8)."""
    return parse_json(decode_utf8(read_bytes(path, max_bytes), path), path)


def save_figure(fig, path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path

"""A client of a csd mount: offload eBPF kernels to the device through `user.csd.*` keys.

Every function takes a path inside a csd mount and a kernel path inside the same mount (from
its root, as ``/kernels/entropy.o``). The offload state belongs to the calling process.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import mmap
import os
from typing import Iterator, Optional, Tuple, Union

__all__ = [
    "CsdError",
    "file_job",
    "stats",
    "log",
    "read_stream",
    "write_stream",
    "StreamFile",
]

PathLike = Union[str, "os.PathLike[str]"]
Args = Optional[Tuple[int, int]]

_PAGE = mmap.PAGESIZE


class CsdError(OSError):
    """An offload the mount refused or a kernel that failed; ``errno`` says why."""


def _call(what: str, path: PathLike, fn, *args):
    try:
        return fn(path, *args)
    except OSError as e:
        code = e.errno if e.errno is not None else _errno.EIO
        raise CsdError(code, f"{what}: {os.strerror(code)}", os.fspath(path)) from e


def _set(path: PathLike, key: str, value: bytes) -> None:
    _call(f"setting user.csd.{key}", path, os.setxattr, f"user.csd.{key}", value)


def _get(path: PathLike, key: str) -> bytes:
    return _call(f"reading user.csd.{key}", path, os.getxattr, f"user.csd.{key}")


def _remove(path: PathLike, key: str) -> None:
    _call(f"removing user.csd.{key}", path, os.removexattr, f"user.csd.{key}")


def _set_args(path: PathLike, args: Args) -> None:
    if args is not None:
        a, b = args
        _set(path, "args", f"{int(a)} {int(b)}".encode())


def file_job(path: PathLike, kernel: str, args: Args = None) -> bytes:
    """Runs ``kernel`` once over the whole file on the device; returns its output."""
    _set_args(path, args)
    _set(path, "file_job", kernel.encode())
    return _get(path, "result")


def stats(path: PathLike) -> dict[str, int]:
    """The counters of this process's last run on ``path`` (``instructions``, ``fuel_used``,
    ``device_bytes_read``, ``bytes_returned``, the modeled ``device_ns`` ...)."""
    text = _get(path, "stats").decode()
    return {k: int(v) for k, v in (pair.split("=", 1) for pair in text.split())}


def log(path: PathLike) -> list[str]:
    """The ``csd_log`` lines of this process's last run on ``path``, oldest first."""
    return _get(path, "log").decode(errors="replace").splitlines()


class _Aligned:
    """A page-aligned buffer of ``n`` bytes and a view of exactly them: one request to the
    mount, not split at an unaligned page boundary (stream files are direct I/O)."""

    def __init__(self, n: int) -> None:
        self._buf = mmap.mmap(-1, max(_PAGE, -(-n // _PAGE) * _PAGE))
        self._view = memoryview(self._buf)[:n]

    def __enter__(self) -> "tuple[mmap.mmap, memoryview]":
        return self._buf, self._view

    def __exit__(self, *exc: object) -> None:
        self._view.release()
        self._buf.close()


class StreamFile:
    """A file opened after a stream's key was set: its reads and writes run the kernel.

    Each ``read(n)`` is one request to the mount (a page-aligned buffer, so the kernel sees
    the whole range at once): it returns the kernel's output over the file's next ``n`` bytes
    and moves past them, however long the output. Each ``write(data)`` stores the kernel's
    output for ``data`` at the current offset and moves past ``len(data)``."""

    def __init__(self, path: PathLike, writing: bool) -> None:
        flags = os.O_WRONLY if writing else os.O_RDONLY
        self._fd: int = _call("opening", path, os.open, flags)
        self._offset = 0
        self.name = os.fspath(path)

    def read(self, n: int = 1 << 20) -> bytes:
        with _Aligned(n) as (buf, view):
            got = _call("reading", self.name, lambda _p: os.preadv(self._fd, [view], self._offset))
            # The kernel covered the file's bytes of the range, whatever it returned for them.
            self._offset += n
            return bytes(buf[:got])

    def write(self, data: bytes) -> int:
        with _Aligned(len(data)) as (buf, view):
            buf[: len(data)] = data
            done = _call(
                "writing", self.name, lambda _p: os.pwritev(self._fd, [view], self._offset)
            )
        self._offset += done
        return done

    def seek(self, offset: int) -> int:
        self._offset = offset
        return offset

    def tell(self) -> int:
        return self._offset

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "StreamFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _stream(path: PathLike, key: str, kernel: str, args: Args, writing: bool) -> Iterator[StreamFile]:
    _set_args(path, args)
    _set(path, key, kernel.encode())
    try:
        with StreamFile(path, writing) as f:
            yield f
    finally:
        _remove(path, key)


def read_stream(path: PathLike, kernel: str, args: Args = None):
    """Sets ``user.csd.read_stream``; yields a :class:`StreamFile` whose reads return the
    kernel's output over the bytes read; removes the key on exit."""
    return _stream(path, "read_stream", kernel, args, writing=False)


def write_stream(path: PathLike, kernel: str, args: Args = None):
    """Sets ``user.csd.write_stream``; yields a :class:`StreamFile` whose writes store the
    kernel's output for the bytes written; removes the key on exit."""
    return _stream(path, "write_stream", kernel, args, writing=True)

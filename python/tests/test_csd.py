"""The client against a real mount. Run by `tests/tests/fuse/python.rs`, which mounts a fresh
image, copies the kernels to /kernels and sets CSD_MOUNT; the package is the one installed
with pip."""

import errno
import os
import struct
import unittest
from collections import Counter

import csd

MOUNT = os.environ["CSD_MOUNT"]


def path(name: str) -> str:
    return os.path.join(MOUNT, name)


def histogram(data: bytes) -> bytes:
    counts = Counter(data)
    return b"".join(struct.pack("<Q", counts.get(b, 0)) for b in range(256))


DATA = bytes((i * 7 + i // 251) % 256 for i in range(300_000))


class Client(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        with open(path("data"), "wb") as f:
            f.write(DATA)

    def test_file_job_and_stats(self) -> None:
        self.assertEqual(csd.file_job(path("data"), "/kernels/entropy.o"), histogram(DATA))
        stats = csd.stats(path("data"))
        self.assertEqual(stats["device_bytes_read"], len(DATA))
        self.assertEqual(stats["bytes_returned"], 2048)
        self.assertGreater(stats["instructions"], 0)
        self.assertIn("device_ns", stats)

    def test_the_rust_kernel_matches_the_c_one(self) -> None:
        self.assertEqual(
            csd.file_job(path("data"), "/kernels/entropy_rs.o"),
            csd.file_job(path("data"), "/kernels/entropy.o"),
        )

    def test_args_reach_the_kernel(self) -> None:
        out = csd.file_job(path("data"), "/kernels/return_param.o", args=(1234, 0))
        self.assertEqual(struct.unpack("<Q", out)[0], 1234)

    def test_missing_kernel_is_enoent(self) -> None:
        with self.assertRaises(OSError) as caught:
            csd.file_job(path("data"), "/kernels/missing.o")
        self.assertEqual(caught.exception.errno, errno.ENOENT)
        self.assertIsInstance(caught.exception, csd.CsdError)

    def test_log_lines(self) -> None:
        csd.file_job(path("data"), "/kernels/log_twice.o")
        self.assertEqual(csd.log(path("data")), ["first line", "second line"])

    def test_read_stream_yields_the_kernel_output(self) -> None:
        with csd.read_stream(path("data"), "/kernels/entropy.o") as f:
            first = f.read(65536)
            second = f.read(65536)
        self.assertEqual(first, histogram(DATA[:65536]))
        self.assertEqual(second, histogram(DATA[65536:131072]))
        # The key is gone: a plain read returns the file's bytes.
        with open(path("data"), "rb") as f:
            self.assertEqual(f.read(16), DATA[:16])

    def test_write_stream_stores_the_kernel_output(self) -> None:
        with open(path("copy"), "wb"):
            pass
        block = bytes(range(256)) * 16
        with csd.write_stream(path("copy"), "/kernels/xor.o", args=(0x5A, 0)) as f:
            self.assertEqual(f.write(block), len(block))
        with open(path("copy"), "rb") as f:
            self.assertEqual(f.read(), bytes(b ^ 0x5A for b in block))


if __name__ == "__main__":
    unittest.main()

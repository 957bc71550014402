"""A PEP 517 build backend for this package, from the standard library alone: the wheel is
the files under src/ and the metadata pyproject.toml declares (name, version, summary)."""

from __future__ import annotations

import base64
import hashlib
import os
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = "py3-none-any"


def _project() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _metadata() -> str:
    p = _project()
    return (
        "Metadata-Version: 2.1\n"
        f"Name: {p['name']}\n"
        f"Version: {p['version']}\n"
        f"Summary: {p['description']}\n"
        f"Requires-Python: {p['requires-python']}\n"
    )


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    p = _project()
    dist = f"{p['name']}-{p['version']}"
    name = f"{dist}-{TAG}.whl"
    files = []
    src = os.path.join(ROOT, "src")
    for folder, _, names in os.walk(src):
        for n in sorted(names):
            if n.endswith(".pyc"):
                continue
            full = os.path.join(folder, n)
            with open(full, "rb") as f:
                files.append((os.path.relpath(full, src), f.read()))
    files.append((f"{dist}.dist-info/METADATA", _metadata().encode()))
    wheel = f"Wheel-Version: 1.0\nGenerator: csd_build\nRoot-Is-Purelib: true\nTag: {TAG}\n"
    files.append((f"{dist}.dist-info/WHEEL", wheel.encode()))
    record = f"{dist}.dist-info/RECORD"
    lines = [f"{path},{_digest(data)},{len(data)}" for path, data in files] + [f"{record},,"]
    files.append((record, ("\n".join(lines) + "\n").encode()))
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files:
            z.writestr(path, data)
    return name


def get_requires_for_build_wheel(config_settings=None):
    return []

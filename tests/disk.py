"""A real small file system for tests: a tmpfs mounted for one test and removed after it."""

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

MiB = 1 << 20


@contextlib.contextmanager
def small_disk(directory: Path, size: int):
    """Mount a tmpfs of `size` bytes at `directory` (made here); unmount it at the end.
    Skips the test, saying why, where mounting is impossible (not root, no mount)."""
    if os.geteuid() != 0:
        pytest.skip("a small file system is mounted with `mount -t tmpfs`, which needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command here to make a small file system")
    directory.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], capture_output=True, text=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(directory)], check=True)  # a process still had a file open


def free(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def fill(directory: Path, leave: int) -> Path:
    """Write a filler file that leaves about `leave` bytes free; returns it (remove it to free the space)."""
    filler = directory / "filler"
    with open(filler, "ab") as file:
        block = b"\xa5" * MiB
        while (room := free(directory) - leave) > 0:
            file.write(block[: min(room, MiB)])
            file.flush()
    return filler

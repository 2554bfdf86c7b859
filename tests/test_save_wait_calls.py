"""A save's thread inside a system call that moves a file's bytes counts as writing
(distributed._in_io_call, which keeps the waiting ranks waiting for rank 0's save): sendfile,
as a library copying a file into a socket or pipe does, as well as write."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from mypt.distributed import _in_io_call

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or os.uname().machine not in ("x86_64", "aarch64"),
                                reason="/proc's syscall file and Linux's syscall tables")


@pytest.mark.parametrize("call", ["write", "sendfile"])
def test_a_thread_blocked_moving_bytes_is_inside_an_io_call(tmp_path, call):
    """A thread whose bytes stand still in `call` (a full pipe: a hung mount stands in the same
    way) is seen inside an I/O call; a thread asleep is not."""
    src = tmp_path / "src"
    src.write_bytes(b"x" * (1 << 20))  # more than a pipe holds (64 KiB)
    r, w = os.pipe()
    ids, done = [], threading.Event()

    def move() -> None:
        ids.append(threading.get_native_id())
        with open(src, "rb") as f:
            try:
                if call == "write":
                    os.write(w, f.read())
                else:  # (a partial count where the pipe fills: again, as a caller sends the rest)
                    sent = 0
                    while sent < 1 << 20:
                        sent += os.sendfile(w, f.fileno(), sent, (1 << 20) - sent)
            except OSError:  # (the pipe closed by the test's end)
                pass
        done.set()

    thread = threading.Thread(target=move, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not (ids and _in_io_call(ids[0])) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _in_io_call(ids[0]), open(f"/proc/self/task/{ids[0]}/syscall").read()
    finally:
        os.close(r)  # the blocked call ends (EPIPE)
        done.wait(10)
        os.close(w)
    asleep = threading.Thread(target=time.sleep, args=(2,), daemon=True)
    asleep.start()
    time.sleep(0.2)
    assert not _in_io_call(asleep.native_id)

"""The SysV message queue between the engine and its output reader, and its life cycle.

The engine creates a private queue (msgget(IPC_PRIVATE), never a fixed key that could meet a FastDeploy
on the same host), passes `msqid` to the reader process, sends each step with the `save_output` op and
the end of the run with `send_end()`, and removes the queue when the run ends, whatever happened.
Linux only (ctypes on glibc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from fdoverlap_cli import stop_signals
from fdoverlap_cli.errors import FdoError

IPC_PRIVATE = 0
IPC_CREAT = 0o1000
IPC_NOWAIT = 0o4000
IPC_RMID = 0
IPC_STAT = 2
MESSAGE_TYPE = 1  # the mtype save_output uses
END_OF_RUN = (0, 0)  # the message that tells the reader the run is over
FULL_QUEUE_SLEEP_S = 50e-6  # how often save, waiting on a full output queue, tries again (both output paths)


class _IpcPerm(ctypes.Structure):
    # struct ipc_perm on 64-bit Linux (x86-64 and aarch64 agree on the size and on every offset used here).
    _fields_ = (
        ("key", ctypes.c_int),
        ("uid", ctypes.c_uint),
        ("gid", ctypes.c_uint),
        ("cuid", ctypes.c_uint),
        ("cgid", ctypes.c_uint),
        ("mode", ctypes.c_uint),
        ("seq", ctypes.c_ushort),
        ("_pad", ctypes.c_ushort),
        ("_reserved1", ctypes.c_ulong),
        ("_reserved2", ctypes.c_ulong),
    )


class _MsqidDs(ctypes.Structure):
    # struct msqid_ds on 64-bit Linux, with room to spare in case a libc adds fields at the end.
    _fields_ = (
        ("msg_perm", _IpcPerm),
        ("msg_stime", ctypes.c_long),
        ("msg_rtime", ctypes.c_long),
        ("msg_ctime", ctypes.c_long),
        ("msg_cbytes", ctypes.c_ulong),
        ("msg_qnum", ctypes.c_ulong),
        ("msg_qbytes", ctypes.c_ulong),
        ("msg_lspid", ctypes.c_int),
        ("msg_lrpid", ctypes.c_int),
        ("_reserved", ctypes.c_ulong * 8),
    )


class _EndMessage(ctypes.Structure):
    _fields_ = (("mtype", ctypes.c_long), ("mtext", ctypes.c_int32 * 2))


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_long) != 8:
        raise FdoError(f"the output message queue needs 64-bit Linux (SysV IPC); this is {sys.platform}")
    if _libc is None:
        try:  # glibc's name: find_library would run ldconfig in a subprocess, in every reader
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _libc.msgget.argtypes = (ctypes.c_int, ctypes.c_int)
        _libc.msgctl.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
        _libc.msgsnd.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return _libc


def _stat(msqid: int) -> _MsqidDs | None:
    """The queue's IPC_STAT record, or None when no queue has this id (any more)."""
    ds = _MsqidDs()
    if _lib().msgctl(msqid, IPC_STAT, ctypes.byref(ds)) == 0:
        return ds
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.EIDRM):
        return None
    raise FdoError(f"message queue {msqid}: IPC_STAT failed: {os.strerror(err)}")


def queue_exists(msqid: int) -> bool:
    """True while a queue with this id exists."""
    return _stat(msqid) is not None


def remove_queue(msqid: int) -> None:
    """IPC_RMID of a queue by id (a queue already gone is fine): also for a reader whose tool died."""
    if _lib().msgctl(msqid, IPC_RMID, None) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.EIDRM):
            raise FdoError(f"message queue {msqid}: cannot remove it: {os.strerror(err)}")


def message_bytes(slots: int) -> int:
    """The size msgsnd is given for one step of `slots` slots: [msg_id, bsz, token_0 … token_bsz-1], int32."""
    return (slots + 2) * 4


def _kernel_limit(name: str) -> int | None:
    try:
        return int(Path(f"/proc/sys/kernel/{name}").read_text())
    except (OSError, ValueError):
        return None


def check_message_size(slots: int) -> None:
    """Raise FdoError when one step's message for `slots` slots is more than this host lets a message
    (kernel.msgmax) or a new queue (kernel.msgmnb) hold: msgsnd would fail, or wait forever, mid-run."""
    size = message_bytes(slots)
    for name, what in (("msgmax", "one message"), ("msgmnb", "a queue")):
        limit = _kernel_limit(name)
        if limit is not None and size > limit:
            raise FdoError(
                f"max_num_seqs {slots:,}: a step's output message is {size:,} bytes, more than this host lets "
                f"{what} hold (kernel.{name} = {limit:,} in /proc/sys/kernel/{name}); use max_num_seqs "
                f"{max(limit // 4 - 2, 0):,} or fewer, or raise the limit (sysctl -w kernel.{name}={size})"
            )


class MessageQueue:
    """A new private SysV message queue, removed on exit from the `with` block whatever happened."""

    def __init__(self) -> None:
        msqid = -1
        try:
            with stop_signals.held():  # a signal right after msgget must not leave a queue nobody knows of
                msqid = _lib().msgget(IPC_PRIVATE, IPC_CREAT | 0o600)
                err = ctypes.get_errno()
        except BaseException:  # the signal, delivered as the block ends: the queue goes with it
            if msqid >= 0:
                remove_queue(msqid)
            raise
        if msqid < 0:
            raise FdoError(f"cannot create the output message queue: {os.strerror(err)} (msgget)")
        self.msqid: int = msqid
        self._removed = False

    def __enter__(self) -> MessageQueue:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def pending(self) -> int:
        """How many messages wait in the queue (0 once it is removed)."""
        ds = _stat(self.msqid)
        return int(ds.msg_qnum) if ds is not None else 0

    def capacity_bytes(self) -> int:
        """The most message bytes the queue holds before a sender sees it full (msg_qbytes)."""
        ds = _stat(self.msqid)
        return int(ds.msg_qbytes) if ds is not None else 0

    def send_end(self, timeout_s: float = 10.0) -> None:
        """Send the end-of-run message [0, 0] (mtype 1, int32, as save_output), waiting while the queue is full."""
        message = _EndMessage(MESSAGE_TYPE, (ctypes.c_int32 * 2)(*END_OF_RUN))
        deadline = time.monotonic() + timeout_s
        while _lib().msgsnd(self.msqid, ctypes.byref(message), ctypes.sizeof(message.mtext), IPC_NOWAIT) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.EINTR):
                raise FdoError(f"message queue {self.msqid}: cannot send the end of the run: {os.strerror(err)}")
            if time.monotonic() > deadline:
                raise FdoError(
                    f"message queue {self.msqid}: still full after {timeout_s:g} s; is the output reader running?"
                )
            time.sleep(0.001)

    def remove(self) -> None:
        """IPC_RMID; idempotent, and a queue someone else already removed is fine."""
        if not self._removed:
            remove_queue(self.msqid)
        self._removed = True

"""Runs a command under the seccomp filter systemd installs for `MemoryDenyWriteExecute=yes`.

There is no systemd to start the unit in a test, so this builds the same filter (systemd 252,
`seccomp_memory_deny_write_execute()`): EPERM for mmap() asking for memory both writable and executable,
for mprotect()/pkey_mprotect() adding PROT_EXEC, and for shmat() with SHM_EXEC. A filter outlives execve(),
so `python -m tests.integration.sandbox CMD ARGS...` runs CMD exactly as the unit would on that point.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys

# linux/audit.h and the per-architecture syscall numbers (mmap, mprotect, pkey_mprotect, shmat).
_ARCHES = {
    "x86_64": (0xC000003E, 9, 10, 329, 30),
    "aarch64": (0xC00000B7, 222, 226, 288, 196),
}
_PROT_WRITE, _PROT_EXEC, _SHM_EXEC = 0x2, 0x4, 0o100000
_ARG2_LOW = 16 + 2 * 8  # struct seccomp_data: nr, arch, ip, then args[6]; little-endian low word of args[2]

_LD_ABS, _JEQ, _JSET, _AND, _RET = 0x20, 0x15, 0x45, 0x54, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


def supported() -> bool:
    """Whether this machine's architecture is one the filter knows."""
    return sys.platform == "linux" and platform.machine() in _ARCHES


def _program() -> bytes:
    audit_arch, mmap, mprotect, pkey_mprotect, shmat = _ARCHES[platform.machine()]
    # (opcode, k, jump-if-true label, jump-if-false label); labels resolve to relative offsets below.
    code: list[tuple[str | None, int, int, str | None, str | None]] = [
        (None, _LD_ABS, 4, None, None),
        (None, _JEQ, audit_arch, None, "allow"),  # another ABI: SystemCallArchitectures=native handles it
        (None, _LD_ABS, 0, None, None),
        (None, _JEQ, mmap, "wx", None),
        (None, _JEQ, mprotect, "x", None),
        (None, _JEQ, pkey_mprotect, "x", None),
        (None, _JEQ, shmat, "shm", "allow"),
        ("wx", _LD_ABS, _ARG2_LOW, None, None),
        (None, _AND, _PROT_WRITE | _PROT_EXEC, None, None),
        (None, _JEQ, _PROT_WRITE | _PROT_EXEC, "deny", "allow"),
        ("x", _LD_ABS, _ARG2_LOW, None, None),
        (None, _JSET, _PROT_EXEC, "deny", "allow"),
        ("shm", _LD_ABS, _ARG2_LOW, None, None),
        (None, _JSET, _SHM_EXEC, "deny", "allow"),
        ("allow", _RET, _ALLOW, None, None),
        ("deny", _RET, _ERRNO | errno.EPERM, None, None),
    ]
    labels = {label: i for i, (label, *_) in enumerate(code) if label}

    def offset(i: int, target: str | None) -> int:
        return 0 if target is None else labels[target] - i - 1

    return b"".join(struct.pack("=HBBI", op, offset(i, jt), offset(i, jf), k)
                    for i, (_, op, k, jt, jf) in enumerate(code))


def deny_write_execute() -> None:
    """Install the filter on this process (and everything it executes from now on)."""
    program = _program()
    count = len(program) // 8
    buffer = ctypes.create_string_buffer(program, len(program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(count, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m tests.integration.sandbox COMMAND [ARGS...]")
    deny_write_execute()
    os.execvp(sys.argv[1], sys.argv[1:])

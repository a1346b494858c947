"""Run a command (proot + qemu-user) with a seccomp filter, for deploy/verify_arm64.sh.

    python3 deploy/guest_exec.py proot -q qemu-aarch64-static -r ROOTFS COMMAND...

Two reasons, both about this process tree only (nothing on the host kernel changes, binfmt_misc
is never touched):
- Debian's proot 5.1 does not translate the paths of faccessat2 and statx, which Bookworm's glibc,
  dash and coreutils use, so `test -x` and `ls` would look at the host's files. Answering ENOSYS
  makes glibc and qemu fall back to faccessat/fstatat, which proot translates.
- The arm64 userland runs as the real root (debootstrap needs it), so mounts, module loading,
  clock and hostname changes, reboot and swap are refused with EPERM: debootstrap's
  second stage tries `mount -t proc` and `umount /proc`, which must not reach the host.

Needs python3-seccomp (apt install python3-seccomp); run it with /usr/bin/python3.
"""
import errno
import os
import sys

try:
    import seccomp
except ImportError:
    sys.exit("guest_exec.py: python3-seccomp is missing (apt-get install python3-seccomp; run with /usr/bin/python3)")

NOT_TRANSLATED = ("faccessat2", "statx")
HOST_CHANGES = ("mount", "umount2", "pivot_root", "move_mount", "fsopen", "fsmount", "open_tree", "swapon",
                "swapoff", "reboot", "kexec_load", "init_module", "finit_module", "delete_module",
                "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname")


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: guest_exec.py COMMAND [ARGS...]")
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for arch in (seccomp.Arch.X86, seccomp.Arch.X32):  # the same rules for x86-64's other ABIs
        rules.add_arch(arch)
    # proot issues a few syscalls under other ABIs; libseccomp would kill them by default
    rules.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.ALLOW)
    for name in NOT_TRANSLATED:
        rules.add_rule(seccomp.ERRNO(errno.ENOSYS), name)
    for name in HOST_CHANGES:
        rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
    rules.load()
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    except OSError as error:
        sys.exit(f"guest_exec.py: {sys.argv[1]}: {error.strerror}")


if __name__ == "__main__":
    main()

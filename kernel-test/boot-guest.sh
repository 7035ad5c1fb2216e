#!/bin/sh
# Boots the initramfs made by build-initramfs.sh under qemu (software emulation, no KVM needed)
# with user-mode networking: inside the guest the host's loopback is 10.0.2.2, nothing else is
# reachable. Verdicts (ttyS1) come out on stdout; the console (ttyS0) goes to CONSOLE_LOG.
#
# Usage: boot-guest.sh OUT_DIR CONSOLE_LOG ktest.port=PORT ktest.steps=... [more kernel args]
set -eu
out=${1:?usage: $0 OUT_DIR CONSOLE_LOG KERNEL_ARGS...}
console=${2:?usage: $0 OUT_DIR CONSOLE_LOG KERNEL_ARGS...}
shift 2
# Four CPUs so that blk-mq maps a CPU to each of the four hardware queues (connections).
exec qemu-system-x86_64 -nographic -no-reboot -m 256M -smp 4 \
	-kernel "$(cat "$out/kernel")" -initrd "$out/initramfs.cpio" \
	-append "console=ttyS0 quiet panic=-1 $*" \
	-netdev user,id=net0 -device e1000,netdev=net0,romfile= \
	-display none -monitor none -serial "file:$console" -serial stdio

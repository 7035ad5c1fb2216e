#!/bin/sh
# Builds the initramfs that KernelClientIT boots under qemu, from Debian packages installed on
# this machine (nothing is downloaded): linux-image-amd64 (kernel and its nbd, e1000 and ext4
# modules), busybox-static, nbd-client and e2fsprogs (with the shared libraries they link), cpio.
#
# Usage: build-initramfs.sh OUT_DIR
# Writes OUT_DIR/initramfs.cpio and OUT_DIR/kernel (a path to the matching /boot/vmlinuz-*).
set -eu

out=$(realpath -m "${1:?usage: $0 OUT_DIR}")
here=$(dirname "$(realpath "$0")")

# The newest kernel that has both an image and its modules.
kver=
for image in $(ls -v /boot/vmlinuz-* 2>/dev/null); do
	v=${image#/boot/vmlinuz-}
	[ -d "/lib/modules/$v" ] && kver=$v
done
[ -n "$kver" ] || { echo "no /boot/vmlinuz-* with /lib/modules (apt-get install linux-image-amd64)" >&2; exit 1; }
for tool in busybox nbd-client mke2fs e2fsck cpio modprobe; do
	PATH=/usr/sbin:/sbin:/usr/bin:/bin command -v "$tool" >/dev/null \
		|| { echo "$tool is missing (.ci/run installs busybox-static nbd-client e2fsprogs cpio kmod)" >&2; exit 1; }
done
busybox=$(PATH=/usr/bin:/bin command -v busybox)
ldd "$busybox" 2>&1 | grep -q 'not a dynamic' || { echo "$busybox is not static (apt-get install busybox-static)" >&2; exit 1; }

root="$out/initramfs-root"
rm -rf "$root"
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" "$root/proc" "$root/sys" \
	"$root/dev" "$root/mnt" "$root/tmp" "$root/lib/modules"
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"

# Dynamically linked tools, each with the libraries ldd lists (and the ELF interpreter).
copy_with_libs() {
	cp -L "$1" "$root/usr/sbin/$(basename "$1")"
	for lib in $(ldd "$1" | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do
		mkdir -p "$root$(dirname "$lib")"
		[ -e "$root$lib" ] || cp -L "$lib" "$root$lib"
	done
}
sbin() { PATH=/usr/sbin:/sbin:/usr/bin:/bin command -v "$1"; }
copy_with_libs "$(sbin nbd-client)"
copy_with_libs "$(sbin mke2fs)"
copy_with_libs "$(sbin e2fsck)"
ln -s mke2fs "$root/usr/sbin/mkfs.ext4"
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$root/etc/"
# ldd resolves /lib64/ld-linux-x86-64.so.2 through the merged /usr; keep the path the binaries name.
if [ ! -e "$root/lib64/ld-linux-x86-64.so.2" ]; then
	mkdir -p "$root/lib64"
	cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
fi

# Modules with their dependencies, in load order; crc32c_generic because ext4 and jbd2 ask for
# crc32c by alias (no modprobe in the guest) and qemu's default CPU has no SSE4.2 for crc32c-intel.
modprobe -a -S "$kver" --show-depends nbd e1000 crc32c_generic ext4 | awk '$1 == "insmod" { print $2 }' \
	| grep -v crc32c-intel | awk '!seen[$0]++' > "$out/modules.list"
: > "$root/lib/modules/load-order"
for ko in $(cat "$out/modules.list"); do
	cp "$ko" "$root/lib/modules/"
	name=$(basename "$ko")
	case "$name" in
	*.xz) xz -d "$root/lib/modules/$name"; name=${name%.xz} ;;
	*.zst) zstd -q -d --rm "$root/lib/modules/$name"; name=${name%.zst} ;;
	esac
	echo "$name" >> "$root/lib/modules/load-order"
done

cp "$here/init" "$root/init"
chmod 0755 "$root/init"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) > "$out/initramfs.cpio"
echo "/boot/vmlinuz-$kver" > "$out/kernel"
echo "initramfs for $kver: $out/initramfs.cpio ($(du -h "$out/initramfs.cpio" | cut -f1))"

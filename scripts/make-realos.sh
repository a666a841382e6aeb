#!/usr/bin/env bash
# Builds a real, bootable Debian bookworm master disk for the real-OS tests (issue 12):
#
#   scripts/make-realos.sh [bios-ext4|xfs|lvm] [OUT]
#
# The disk (GPT, ~1.75 GiB sparse):
#   1  ef02  1 MiB    BIOS boot partition: GRUB's core.img (boot.img in the MBR)
#   2  ef00  64 MiB   ESP (FAT): EFI/BOOT/BOOTX64.EFI, a GRUB image that finds the root by UUID
#   3  8200  128 MiB  swap
#   4  8300  rest     root: ext4 (bios-ext4), XFS (xfs), or an LVM2 PV (lvm) whose VG
#                     `nbrealos` holds LVs `root` (ext4) and `swap`, and free extents
# Debian: debootstrap --variant=minbase + systemd-sysv, udev, linux-image-cloud-amd64 (virtio,
# NVMe), lvm2 (the lvm variant's initramfs activates the VG); fstab by UUID; console=ttyS0;
# BIOS and UEFI boot the same /boot/grub/grub.cfg. The unit netboot-marker.service runs after
# multi-user.target and swap.target, prints one line on /dev/ttyS0
#   NETBOOT-REALOS-MARKER swap=<number of active swap devices> root=<root fstype>
# and powers the machine off.
#
# Cache (under target/realos/, so `cargo clean` drops it):
#   rootfs-<key>.tar   the debootstrapped tree; key = the suite, mirror, packages and the
#                      function that builds it (editing the rest of this script re-uses it)
#   <hash>/<variant>.img  the disk; hash = this script + the variant. A re-run is instant;
#                      a build removes the variant's disks of older script versions.
# OUT, when given, is a hard link to the cached disk (a sparse copy across file systems).
# Prints the disk's path on stdout (the last line).
#
# Network: only the Debian mirror this machine's apt uses (MIRROR= overrides), read from
# /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list.
# Needs root (debootstrap, chroot, loop devices, mounts). Leaves no loop device, partx
# partition, mount or chroot bind behind, on every exit path. Host quirks handled (QEMU.md):
# no partition scanning (partx), no vfat (the ESP is built as a file with mtools), no
# device-mapper (LVs are written through loop devices at their offsets; LVM tools run with
# --driverloaded n), grub-install cannot target a loop disk (grub-mkimage + grub-bios-setup).
set -euo pipefail
export LC_ALL=C MTOOLS_SKIP_CHECK=1 DEBIAN_FRONTEND=noninteractive
variant=${1:-bios-ext4}
out=${2:-}
case "$variant" in bios-ext4|xfs|lvm) ;; *) echo "make-realos.sh: unknown variant '$variant' (bios-ext4, xfs or lvm)" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "make-realos.sh: needs root (debootstrap, loop devices, mounts)" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache=${REALOS_CACHE:-$repo/target/realos}
SUITE=bookworm
SIZE_MB=${SIZE_MB:-1792}
# Fixed identities: the same script builds the same disk identities (the tests and fstab
# name them).
DISK_GUID=7E4105D0-0D1B-4A7E-9C4E-000000000012
ESP_ID=5EA1B007            # FAT volume id (fstab: UUID=5EA1-B007)
SWAP_UUID=5a7e0000-0012-4000-8000-000000000003
ROOT_UUID=0e4105d0-0012-4000-8000-000000000004
LVSWAP_UUID=5a7e0000-0012-4000-8000-0000000000f2
VG=nbrealos
# Packages beyond minbase: an init, device nodes, a kernel with virtio and NVMe, LVM.
INCLUDE=systemd-sysv,udev,linux-image-cloud-amd64,lvm2,initramfs-tools

mirror() {
  local m=${MIRROR:-}
  if [ -z "$m" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:.*\/debian\/?$/) { print $i; exit } }' /etc/apt/sources.list)
  fi
  [ -n "$m" ] || { echo "make-realos.sh: no Debian mirror in this machine's apt sources; set MIRROR=" >&2; exit 1; }
  echo "$m"
}

# ---- cleanup: every exit path -------------------------------------------------------------
loop="" lvloops=() mnt="" chroot_dir="" scratch="" tmpdisk=""
umount_under() { # unmounts every mount at or below $1, deepest first
  local d=$1
  [ -n "$d" ] || return 0
  findmnt -rn -o TARGET | awk -v d="$d" '$0 == d || index($0, d "/") == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}
cleanup() {
  set +e
  umount_under "$chroot_dir"
  # A half-built tree goes too, but only once nothing is mounted in it (a bind of /dev
  # still there would take the host's device nodes with it).
  if [ -n "$chroot_dir" ] && ! findmnt -rn -o TARGET | grep -q "^$chroot_dir"; then
    rm -rf "$chroot_dir"
  fi
  umount_under "$mnt"
  for l in "${lvloops[@]}"; do losetup -d "$l" 2>/dev/null; done
  if [ -n "$loop" ]; then partx -d "$loop" 2>/dev/null; losetup -d "$loop" 2>/dev/null; fi
  [ -n "$mnt" ] && rmdir "$mnt" 2>/dev/null
  [ -n "$scratch" ] && rm -rf "$scratch"
  [ -n "$tmpdisk" ] && rm -f "$tmpdisk"
  loop="" lvloops=() mnt="" chroot_dir="" scratch="" tmpdisk=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

chroot_mounts() { # $1 = root dir: what a chroot's package scripts need
  mount -t proc proc "$1/proc"
  mount -t sysfs sys "$1/sys"
  mount --bind /dev "$1/dev"
}

# ---- stage 1: the Debian tree (cached tarball) --------------------------------------------
build_rootfs() { # $1 = mirror, $2 = output tarball
  local dir
  dir=$(mktemp -d "$cache/rootfs.XXXXXX")
  chroot_dir=$dir
  debootstrap --variant=minbase --include="$INCLUDE" --components=main "$SUITE" "$dir" "$1" >&2
  umount_under "$dir"   # debootstrap may leave its proc/sys mounts behind
  printf 'APT::Install-Recommends "0";\nAPT::Install-Suggests "0";\n' > "$dir/etc/apt/apt.conf.d/90norecommends"
  echo realos > "$dir/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 realos\n' > "$dir/etc/hosts"
  : > "$dir/etc/machine-id"   # a master: each clone gets its own at first boot
  # No resume device: the initramfs must not wait for the build host's swap.
  echo RESUME=none > "$dir/etc/initramfs-tools/conf.d/resume"
  cat > "$dir/usr/local/sbin/netboot-marker" <<'EOF'
#!/bin/sh
# The real-OS tests' marker: active swap devices and the root's file system, then power off.
swaps=$(($(wc -l < /proc/swaps) - 1))
root=$(findmnt -n -o FSTYPE /)
echo "NETBOOT-REALOS-MARKER swap=$swaps root=$root" > /dev/ttyS0
systemctl --no-block poweroff
EOF
  chmod 755 "$dir/usr/local/sbin/netboot-marker"
  # DefaultDependencies=no: a target adds After= on the units it wants, which with our
  # After=multi-user.target would be a cycle. After= orders only: a failed swap.target
  # still lets the marker run, and it reports swap=0.
  cat > "$dir/etc/systemd/system/netboot-marker.service" <<'EOF'
[Unit]
Description=netboot real-OS marker on ttyS0, then power off
DefaultDependencies=no
Requires=sysinit.target
After=sysinit.target basic.target local-fs.target swap.target multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/netboot-marker

[Install]
WantedBy=multi-user.target
EOF
  mkdir -p "$dir/etc/systemd/system/multi-user.target.wants"
  ln -sf /etc/systemd/system/netboot-marker.service "$dir/etc/systemd/system/multi-user.target.wants/netboot-marker.service"
  chroot_mounts "$dir"
  chroot "$dir" update-initramfs -u -k all >&2
  chroot "$dir" apt-get clean
  umount_under "$dir"
  chroot_dir=""
  rm -rf "$dir/var/lib/apt/lists/"* "$dir/var/cache/apt/"*.bin "$dir/var/log/"*.log
  tar --numeric-owner --xattrs --xattrs-include='*' --acls -C "$dir" -cf "$2.tmp" .
  mv "$2.tmp" "$2"
  rm -rf "$dir"
}

# ---- stage 2: the disk ---------------------------------------------------------------------
part() { echo "${loop}p$1"; }
wait_part() { for _ in $(seq 50); do [ -b "$(part "$1")" ] && return 0; sleep 0.1; done; echo "no $(part "$1")" >&2; exit 1; }
# Byte offset of partition $2 in disk file $1 (sgdisk's start sector × 512).
part_offset() { sgdisk -i "$2" "$1" | awk '/^First sector:/ { print $3 * 512 }'; }

lvm_() { lvm "$@" --devices "$(part 4)" --config 'activation { udev_sync = 0 udev_rules = 0 }'; }

# Makes the LVM variant's VG on partition 4 and attaches loop devices over its LVs (this
# host has no device-mapper): lvloops=(ROOT_LOOP SWAP_LOOP). Not run in a subshell, so that
# cleanup sees the loops.
make_lvm() {
  local img=$1 p4 pe_start extent seg first
  lvm_ pvcreate -ff -y "$(part 4)" >&2
  lvm_ vgcreate -y "$VG" "$(part 4)" >&2
  lvm_ lvcreate --driverloaded n -an -Zn -Wn -y -L 1200M -n root "$VG" >&2
  lvm_ lvcreate --driverloaded n -an -Zn -Wn -y -L 128M -n swap "$VG" >&2
  p4=$(part_offset "$img" 4)
  pe_start=$(lvm_ pvs --noheadings --units b --nosuffix -o pe_start "$(part 4)" | tr -d ' ')
  extent=$(lvm_ vgs --noheadings --units b --nosuffix -o vg_extent_size "$VG" | tr -d ' ')
  for lv in root swap; do
    seg=$(lvm_ lvs --noheadings --segments -o seg_pe_ranges "$VG/$lv" | tr -d ' ')
    case "$seg" in *:*-*) ;; *) echo "make-realos.sh: LV $lv: unexpected segments '$seg'" >&2; exit 1 ;; esac
    first=${seg##*:}; local last=${first#*-}; first=${first%-*}
    local l
    l=$(losetup -f --show -o $((p4 + pe_start + first * extent)) --sizelimit $(((last - first + 1) * extent)) "$img")
    lvloops+=("$l")
  done
}

# The ESP as a file (no vfat on this host): FAT, then GRUB's x86_64-efi image copied in.
make_esp() { # $1 = esp image, $2 = grub x86_64-efi image
  rm -f "$1"
  mkfs.vfat -C -n ESP -i "$ESP_ID" "$1" $((64 * 1024)) >/dev/null
  mmd -i "$1" ::/EFI ::/EFI/BOOT
  mcopy -i "$1" "$2" ::/EFI/BOOT/BOOTX64.EFI
}

# GRUB for BIOS and UEFI: a core image with the root's UUID in its embedded config, modules
# and the one grub.cfg on the root under /boot/grub.
# $5, when given, is the GRUB device of the root, set instead of a search by UUID: GRUB
# 2.06's search by UUID does not find an LV when a device read fails during its scan
# (QEMU's empty floppy drive: "failure reading sector 0x0 from fd0"), while the LV itself
# is readable (grub-mkconfig, too, sets root to the LV before any search).
install_grub() { # $1 = root mount, $2 = root fs uuid, $3 = kernel cmdline root=, $4 = disk image, [$5]
  local rootmnt=$1 uuid=$2 rootarg=$3 img=$4 kver modules
  local findroot="search --no-floppy --fs-uuid --set=root $uuid"
  [ -z "${5:-}" ] || findroot="set root=$5"
  kver=$(basename "$(ls "$rootmnt"/boot/vmlinuz-* | sort -V | tail -n1)"); kver=${kver#vmlinuz-}
  mkdir -p "$rootmnt/boot/grub"
  cp -r /usr/lib/grub/i386-pc "$rootmnt/boot/grub/"
  mkdir -p "$rootmnt/boot/grub/x86_64-efi"
  cp /usr/lib/grub/x86_64-efi/*.mod /usr/lib/grub/x86_64-efi/*.lst "$rootmnt/boot/grub/x86_64-efi/"
  cat > "$rootmnt/boot/grub/grub.cfg" <<EOF
set timeout=0
set default=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
menuentry "Debian GNU/Linux (netboot real-OS master)" {
  insmod gzio
  $findroot
  echo "Loading Linux $kver ..."
  linux /boot/vmlinuz-$kver root=$rootarg ro console=ttyS0,115200 panic=-1
  initrd /boot/initrd.img-$kver
}
EOF
  cat > "$scratch/embed.cfg" <<EOF
$findroot
set prefix=(\$root)/boot/grub
EOF
  modules="part_gpt ext2 xfs lvm search search_fs_uuid normal configfile linux echo test gzio serial terminal"
  # shellcheck disable=SC2086
  grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc -c "$scratch/embed.cfg" -p /boot/grub \
    -o "$rootmnt/boot/grub/i386-pc/core.img" biosdisk $modules
  # grub-bios-setup embeds core.img in the ef02 partition and points boot.img (MBR) at it.
  # It takes its images from a directory on the target's root, as grub-install does (it
  # guesses a "root device" from that directory and fails on one outside the disk).
  /usr/lib/grub/i386-pc/grub-bios-setup --skip-fs-probe -d "$rootmnt/boot/grub/i386-pc" \
    -b boot.img -c core.img "$loop" >&2
  # shellcheck disable=SC2086
  grub-mkimage -O x86_64-efi -d /usr/lib/grub/x86_64-efi -c "$scratch/embed.cfg" -p /EFI/BOOT \
    -o "$scratch/BOOTX64.EFI" fat efi_gop efi_uga all_video $modules
  make_esp "$scratch/esp.img" "$scratch/BOOTX64.EFI"
  dd if="$scratch/esp.img" of="$img" bs=1M seek=$(($(part_offset "$img" 2) / 1048576)) conv=notrunc,sparse status=none
}

write_fstab() { # $1 = root mount, $2 = root fstype, $3 = extra swap line (or empty)
  {
    echo "# netboot real-OS master ($variant): by UUID"
    echo "UUID=$ROOT_UUID / $2 defaults 0 $([ "$2" = xfs ] && echo 0 || echo 1)"
    echo "UUID=${ESP_ID:0:4}-${ESP_ID:4:4} /boot/efi vfat umask=0077 0 1"
    echo "UUID=$SWAP_UUID none swap sw 0 0"
    [ -z "$3" ] || echo "$3"
  } > "$1/etc/fstab"
  mkdir -p "$1/boot/efi"
}

build_disk() { # $1 = rootfs tarball, $2 = output disk
  local img=$2.tmp rootdev fstype rootarg lvswap="" grubroot=""
  tmpdisk=$img   # removed by cleanup unless finished
  scratch=$(mktemp -d "$cache/scratch.XXXXXX")
  rm -f "$img"
  truncate -s "${SIZE_MB}M" "$img"
  local t4=8300; [ "$variant" = lvm ] && t4=8e00
  sgdisk -o -U "$DISK_GUID" \
    -n 1:2048:+1M -t 1:ef02 -c 1:bios-boot \
    -n 2:0:+64M -t 2:ef00 -c 2:ESP \
    -n 3:0:+128M -t 3:8200 -c 3:swap \
    -n 4:0:0 -t 4:$t4 -c 4:root "$img" >/dev/null
  loop=$(losetup -f --show "$img")
  partx -a "$loop"
  for n in 1 2 3 4; do wait_part $n; done
  mkswap -L swap -U "$SWAP_UUID" "$(part 3)" >/dev/null
  case "$variant" in
    bios-ext4) rootdev=$(part 4); fstype=ext4; rootarg=UUID=$ROOT_UUID ;;
    xfs) rootdev=$(part 4); fstype=xfs; rootarg=UUID=$ROOT_UUID ;;
    lvm)
      make_lvm "$img"
      rootdev=${lvloops[0]}; fstype=ext4; rootarg=/dev/mapper/$VG-root; grubroot=lvm/$VG-root
      mkswap -L lvswap -U "$LVSWAP_UUID" "${lvloops[1]}" >/dev/null
      lvswap="UUID=$LVSWAP_UUID none swap sw 0 0" ;;
  esac
  case "$fstype" in
    ext4) mkfs.ext4 -q -F -L root -U "$ROOT_UUID" -E lazy_itable_init=0,nodiscard "$rootdev" ;;
    xfs) mkfs.xfs -q -f -L root -m uuid="$ROOT_UUID" -K "$rootdev" ;;
  esac
  mnt=$(mktemp -d "$cache/mnt.XXXXXX")
  mount "$rootdev" "$mnt"
  tar --numeric-owner --xattrs --xattrs-include='*' --acls -C "$mnt" -xf "$1"
  write_fstab "$mnt" "$fstype" "$lvswap"
  install_grub "$mnt" "$ROOT_UUID" "$rootarg" "$img" "$grubroot"
  sync -f "$mnt"
  umount "$mnt"; rmdir "$mnt"; mnt=""
  tmpdisk=""
  cleanup
  mv "$img" "$2"
}

main() {
  mkdir -p "$cache"
  local m key hash tarball disk start
  m=$(mirror)
  key=$(printf '%s\n' "$SUITE" "$m" "$INCLUDE" "$(declare -f build_rootfs)" | sha256sum | cut -c1-16)
  hash=$( { cat "$0"; echo "$variant"; } | sha256sum | cut -c1-16)
  tarball=$cache/rootfs-$key.tar
  disk=$cache/$hash/$variant.img
  if [ ! -f "$disk" ]; then
    start=$(date +%s)
    if [ ! -f "$tarball" ]; then
      echo "make-realos.sh: debootstrap $SUITE from $m (cold: a few minutes)" >&2
      build_rootfs "$m" "$tarball"
      echo "make-realos.sh: rootfs in $(($(date +%s) - start)) s: $tarball" >&2
    fi
    mkdir -p "$cache/$hash"
    build_disk "$tarball" "$disk"
    echo "make-realos.sh: $variant disk built in $(($(date +%s) - start)) s" >&2
    # Older versions of this variant's disk (other script hashes) only take space.
    for old in "$cache"/*/"$variant.img"; do
      [ "$old" = "$disk" ] || { rm -f "$old"; rmdir "$(dirname "$old")" 2>/dev/null || true; }
    done
  fi
  if [ -n "$out" ]; then
    rm -f "$out"
    ln "$disk" "$out" 2>/dev/null || cp --sparse=always "$disk" "$out"
    disk=$out
  fi
  echo "$disk"
}
main

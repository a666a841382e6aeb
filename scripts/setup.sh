#!/usr/bin/env bash
# Installs what building, testing and the demo need on a fresh Debian machine.
# Idempotent: packages already present are skipped quickly by apt.
set -euo pipefail
need=(e2fsprogs dosfstools mtools gdisk fdisk util-linux mount attr zstd coreutils iproute2)
# Boot tree, DHCP checks and QEMU network boots (pxe-builder, qemu-tests).
need+=(qemu-system-x86 qemu-system-data ipxe-qemu seabios qemu-utils pxelinux syslinux-common
       linux-image-cloud-amd64 busybox-static cpio ovmf grub-efi-amd64-bin grub-common
       dnsmasq-base isc-dhcp-server nginx)
# The real-server boots (qemu-tests' realnet): ISC dhcrelay in a router namespace, tftpd-hpa
# beside ISC dhcpd, sysctl for the router's forwarding.
need+=(isc-dhcp-relay tftpd-hpa procps)
# Real-world disks (issue 12): the file systems and volume manager real clusters run, their
# checkers for the restore tests, LUKS signatures for the wipe tests, and the real-OS master
# (debootstrap, GRUB for BIOS; GRUB for UEFI is above).
need+=(xfsprogs btrfs-progs lvm2 cryptsetup-bin debootstrap grub-pc-bin)
# Of these, the packages that ship a system service. The tests run their own copies, in the
# foreground, inside network namespaces they create; the distro's would answer DHCP, TFTP or
# HTTP on this machine's own network (and take ports 67, 69, 80).
services=(isc-dhcp-server isc-dhcp-relay tftpd-hpa nginx)
# The service packages this script installed (so that only those are disabled, on every run).
ours=/var/lib/netboot-setup/service-packages
if [ "${WITH_BENCH:-0}" = 1 ]; then need+=(partclone bmap-tools jq); fi
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Installing isc-dhcp-server, isc-dhcp-relay, tftpd-hpa or nginx would start its service
  # at once: policy-rc.d's "101" (action forbidden) makes invoke-rc.d skip that start.
  blocker=/usr/sbin/policy-rc.d
  if [ ! -e "$blocker" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$blocker"; chmod +x "$blocker"
    trap 'rm -f "$blocker"' EXIT
  fi
  # Remember, before installing, which service packages this script installs: a run that
  # dies after apt-get (or an older setup.sh that did not disable them) is mended by the next.
  mkdir -p "$(dirname "$ours")"
  for p in "${missing[@]}"; do
    case " ${services[*]} " in
      *" $p "*) grep -qx "$p" "$ours" 2>/dev/null || echo "$p" >> "$ours" ;;
    esac
  done
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # qemu-system-x86 can pull in an older qemu-utils; keep the newest (see QEMU.md).
  apt-get install -y -qq --no-install-recommends qemu-utils >/dev/null
fi
# policy-rc.d only stops the start during installation; the services are still enabled and
# would start at the next boot. On every run, disable (and stop, should one run) the services
# of the packages this script installed (listed in $ours), and only those: a service the
# machine had before is the admin's business. systemd or sysvinit links alike.
if [ -f "$ours" ]; then
  while read -r p; do
    [ -n "$p" ] || continue
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "$p.service" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$p" ]; then
      "/etc/init.d/$p" stop >/dev/null 2>&1 || true
      update-rc.d "$p" disable >/dev/null 2>&1 || true
    fi
  done < "$ours"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; installing Rust with rustup" >&2
  apt-get install -y -qq --no-install-recommends curl ca-certificates
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi

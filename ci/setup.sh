#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (root, no systemd as PID 1) for building and testing strata.
#
# Idempotent: every step checks whether it is already done. Run as root.
#   - Debian packages: podman (+ runc), qemu, the reference tools the tests judge products with,
#     swtpm (the TPM2 of tests/e2e/helper_vm.rs's boots)
#   - podman configured for this VM's quirks (see shared ENVIRONMENT notes in ci/README.md)
#   - an unprivileged user for the rootless build tests
#   - a local trixie base image (no container registry is reachable), for root and that user
#   - a loopback OCI registry (Debian's docker-registry) on 127.0.0.1:5000
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/lib.sh
. "$here/lib.sh"

[ "$(id -u)" = 0 ] || die "ci/setup.sh must run as root (it installs packages and creates a user)"

step "Debian packages"
pkgs=(
  podman runc uidmap slirp4netns fuse-overlayfs catatonit
  qemu-system-x86 qemu-utils
  mmdebstrap debian-archive-keyring
  cpio zstd xz-utils kmod e2fsprogs
  docker-registry skopeo apache2-utils
  squashfs-tools erofs-utils cryptsetup-bin fdisk openssl sbsigntool
  hyperfine diffoscope-minimal attr jq curl
  swtpm mdadm
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "podman configuration"
install -d /etc/containers /etc/containers/registries.conf.d
# This VM: root lacks CAP_SYS_RESOURCE (hard nofile limit 20000) and cgroups are hybrid,
# which crun refuses; runc works.
write_if_changed /etc/containers/containers.conf <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
write_if_changed /etc/containers/registries.conf.d/50-strata-ci.conf <<EOF
[[registry]]
location = "$REGISTRY_ADDR"
insecure = true
EOF
# rootless networking needs the tun device
if [ -e /dev/net/tun ]; then chmod 0666 /dev/net/tun; fi

step "rootless user $ROOTLESS_USER"
if ! id "$ROOTLESS_USER" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$ROOTLESS_USER"
fi
grep -q "^$ROOTLESS_USER:" /etc/subuid || usermod --add-subuids 200000-265535 "$ROOTLESS_USER"
grep -q "^$ROOTLESS_USER:" /etc/subgid || usermod --add-subgids 200000-265535 "$ROOTLESS_USER"
uid=$(id -u "$ROOTLESS_USER")
install -d -m 0700 -o "$ROOTLESS_USER" -g "$ROOTLESS_USER" "/run/user/$uid"
home=$(getent passwd "$ROOTLESS_USER" | cut -d: -f6)
install -d -o "$ROOTLESS_USER" -g "$ROOTLESS_USER" "$home/.config" "$home/.config/containers"
# Without this, rootless podman silently falls back to the (slow, huge) vfs driver.
write_if_changed "$home/.config/containers/storage.conf" <<'EOF'
[storage]
driver = "overlay"
EOF
chown "$ROOTLESS_USER:$ROOTLESS_USER" "$home/.config/containers/storage.conf"

step "trixie base image"
base_tar=$CI_CACHE/debian-trixie-minbase.tar
install -d "$CI_CACHE"
if [ ! -s "$base_tar" ]; then
  # SOURCE_DATE_EPOCH only makes the tarball's own metadata stable; the image content is
  # whatever the mirror serves today. strata never puts this image into a product: it is the
  # builder's base, and the builder image digest goes into every cache key.
  SOURCE_DATE_EPOCH=1700000000 mmdebstrap --quiet --format=tar --variant=minbase trixie "$base_tar.tmp" "$DEBIAN_MIRROR"
  mv "$base_tar.tmp" "$base_tar"
fi
if ! podman image exists "$BASE_IMAGE"; then
  podman import --quiet "$base_tar" "$BASE_IMAGE" >/dev/null
fi
chmod 0644 "$base_tar"
if ! as_rootless podman image exists "$BASE_IMAGE"; then
  as_rootless podman import --quiet "$base_tar" "$BASE_IMAGE" >/dev/null
fi

step "loopback registry on $REGISTRY_ADDR"
"$here/registry.sh" start

step "check: podman runs a container (root and rootless)"
podman run --rm --network=none "$BASE_IMAGE" true
as_rootless podman run --rm --network=none "$BASE_IMAGE" true
echo "setup done"

#!/bin/sh
# Download and unpack the kernel package (and firmware packages) without running their
# maintainer scripts (no initramfs hooks), then index the modules with depmod.
# Usage: kernel-fetch.sh MIRROR RELEASE COMPONENTS(space-separated) PACKAGE [FIRMWARE-PACKAGE...]
# Prints STRATA_KERNEL_PACKAGE=name=version and STRATA_KERNEL_VERSION=uname-r.
set -eu
mirror=$1 release=$2 components=$3 package=$4
shift 4
mkdir -p /work/debs /work/root /work/meta
cat >/etc/apt/sources.list.d/strata.sources <<SOURCES
Types: deb
URIs: $mirror
Suites: $release
Components: $components
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
rm -f /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list
apt-get update -q -o Acquire::Retries=3
# A metapackage such as linux-image-amd64 depends on the versioned image package.
real=$(apt-cache depends --no-recommends --no-suggests --important "$package" \
  | sed -n 's/^ *Depends: \(linux-image-[0-9][^ <>]*\)$/\1/p' | head -n 1)
[ -n "$real" ] || real=$package
cd /work/debs
apt-get download -q -o Acquire::Retries=3 "$real" "$@"
for deb in ./*.deb; do dpkg-deb -x "$deb" /work/root; done
deb=$(ls ./"${real}"_*.deb)
echo "STRATA_KERNEL_PACKAGE=$(dpkg-deb -f "$deb" Package)=$(dpkg-deb -f "$deb" Version)"
moddir=$(ls -d /work/root/usr/lib/modules/* | head -n 1)
version=$(basename "$moddir")
# trixie's kmod looks below BASE/lib/modules; the package ships /usr/lib/modules.
[ -e /work/root/lib ] || ln -s usr/lib /work/root/lib
depmod -b /work/root "$version"
for f in modules.dep modules.builtin modules.softdep modules.alias modules.weakdep; do
  if [ -e "$moddir/$f" ]; then cp "$moddir/$f" /work/meta/; else : >"/work/meta/$f"; fi
done
echo "STRATA_KERNEL_VERSION=$version"

#!/bin/sh
# Copy the selected modules (one path per line in /work/selection.txt, relative to the
# modules directory) and the firmware they reference into /out, then run depmod there.
# Usage: kernel-assemble.sh VERSION
# Prints STRATA_FIRMWARE_MISSING=name for firmware no installed package provides.
set -eu
version=$1
src=/work/root/usr/lib/modules/$version
dst=/out/usr/lib/modules/$version
mkdir -p "$dst"
while read -r path; do
  mkdir -p "$dst/$(dirname "$path")"
  cp -p "$src/$path" "$dst/$path"
done </work/selection.txt
for f in modules.order modules.builtin modules.builtin.modinfo; do
  [ ! -e "$src/$f" ] || cp -p "$src/$f" "$dst/$f"
done
ln -s usr/lib /out/lib  # see kernel-fetch.sh; removed again below
depmod -b /out "$version"
rm /out/lib
while read -r path; do modinfo -F firmware "$src/$path"; done </work/selection.txt | sort -u >/work/firmware.txt
while read -r fw; do
  found=
  for candidate in "$fw" "$fw.xz" "$fw.zst"; do
    if [ -e "/work/root/usr/lib/firmware/$candidate" ]; then
      mkdir -p "/out/usr/lib/firmware/$(dirname "$candidate")"
      cp -pL "/work/root/usr/lib/firmware/$candidate" "/out/usr/lib/firmware/$candidate"
      found=1
      break
    fi
  done
  [ -n "$found" ] || echo "STRATA_FIRMWARE_MISSING=$fw"
done </work/firmware.txt
cp -p "/work/root/boot/vmlinuz-$version" /work/vmlinuz

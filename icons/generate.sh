#!/usr/bin/env bash
# Generates every PNG/ICO/ICNS the app and its tray need from the SVG sources here, with the
# Tauri CLI (ui's dev dependency: run `npm ci` in ui/ first). Run it after changing an SVG and
# commit the results; the app's config (src-tauri/tauri.conf.json) points at them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tauri="$here/../ui/node_modules/.bin/tauri"
[ -x "$tauri" ] || { echo "no Tauri CLI: run npm ci in ui/ first" >&2; exit 1; }
# The app icon in the sizes and formats each OS's bundle takes (PNG, ICO, ICNS).
"$tauri" icon "$here/app.svg" -o "$here/app"
# Mobile and Windows-store images are not used.
rm -rf "$here/app/android" "$here/app/ios" "$here"/app/Square*Logo.png "$here/app/StoreLogo.png"
# Tray icons: 32 px, and 64 px for high-density screens.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for svg in "$here"/tray/*.svg; do
  name="$(basename "$svg" .svg)"
  "$tauri" icon "$svg" -o "$tmp/$name" -p 32 -p 64 >/dev/null
  cp "$tmp/$name/32x32.png" "$here/tray/$name.png"
  cp "$tmp/$name/64x64.png" "$here/tray/$name@2x.png"
done

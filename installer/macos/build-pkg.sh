#!/bin/sh
# Builds Pinhole's macOS installer on a Mac (Apple's pkgbuild and productbuild):
#   installer/macos/build-pkg.sh <dir with pinholed, pinhole, pinhole-app> <version> <out.pkg>
# It holds Pinhole.app, /usr/local/bin/{pinholed,pinhole}, the launchd daemon and the
# uninstall script; the postinstall script makes the group, adds the console user and starts
# pinholed. Signing and notarisation are for a release pipeline with Apple credentials.
set -eu

bin="$1"
version="$2"
out="$3"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

root="$work/root"
app="$root/Applications/Pinhole.app/Contents"
mkdir -p "$app/MacOS" "$app/Resources" "$root/usr/local/bin" "$root/usr/local/share/pinhole" \
    "$root/Library/LaunchDaemons"
install -m 755 "$bin/pinhole-app" "$app/MacOS/pinhole-app"
sed "s/@VERSION@/$version/g" "$here/Info.plist" > "$app/Info.plist"
install -m 644 "$repo/icons/app/icon.icns" "$app/Resources/icon.icns"
install -m 755 "$bin/pinholed" "$root/usr/local/bin/pinholed"
install -m 755 "$bin/pinhole" "$root/usr/local/bin/pinhole"
install -m 644 "$here/dev.pinhole.pinholed.plist" "$root/Library/LaunchDaemons/"
install -m 755 "$here/uninstall.sh" "$root/usr/local/share/pinhole/uninstall.sh"
plutil -lint "$app/Info.plist" "$root/Library/LaunchDaemons/dev.pinhole.pinholed.plist"

pkgbuild --root "$root" --scripts "$here/scripts" --identifier dev.pinhole.pkg \
    --version "$version" --install-location / "$work/pinhole-component.pkg"
productbuild --package "$work/pinhole-component.pkg" --identifier dev.pinhole.pkg \
    --version "$version" "$out"
pkgutil --payload-files "$work/pinhole-component.pkg" | grep -q 'usr/local/bin/pinholed'
echo "built $out"

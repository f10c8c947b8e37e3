#!/bin/sh
# Removes Pinhole from this Mac: the pinholed daemon, the app, the commands, this device's
# state and logs, and the group pinhole. Run as root:
#   sudo "/usr/local/share/pinhole/uninstall.sh"
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "run as root: sudo $0" >&2
    exit 1
fi
if launchctl print system/dev.pinhole.pinholed >/dev/null 2>&1; then
    launchctl bootout system/dev.pinhole.pinholed || true
fi
pkill -x pinhole-app 2>/dev/null || true
rm -f /Library/LaunchDaemons/dev.pinhole.pinholed.plist
rm -rf /Applications/Pinhole.app
rm -f /usr/local/bin/pinholed /usr/local/bin/pinhole
rm -rf "/Library/Application Support/Pinhole" /Library/Logs/Pinhole
rm -f /var/run/pinholed.sock
if dseditgroup -o read pinhole >/dev/null 2>&1; then
    dseditgroup -o delete pinhole || true
fi
rm -rf /usr/local/share/pinhole
pkgutil --forget dev.pinhole.pkg >/dev/null 2>&1 || true
echo "Pinhole is removed."

#!/bin/sh
# "Send to Device…" for file managers that run scripts (Nautilus/Files:
# ~/.local/share/nautilus/scripts/): lanshare asks which device, then sends
# the selected files and reports the outcome as a desktop notification.
#
# Install for one user (Nautilus calls the entry by the file name):
#   mkdir -p ~/.local/share/nautilus/scripts
#   install -m 755 /usr/share/lanshare/send-to-device.sh \
#       ~/.local/share/nautilus/scripts/"Send to Device…"
#
# Nautilus passes local files as names relative to the folder it runs the
# script in; they are made absolute, so a name that starts with "-" is never
# taken for an option.
set -eu
[ "$#" -gt 0 ] || exit 0
for file; do
    case $file in
    /*) set -- "$@" "$file" ;;
    *) set -- "$@" "$PWD/$file" ;;
    esac
    shift
done
exec share send --choose "$@"

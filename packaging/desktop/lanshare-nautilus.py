# "Send to Device…" in the context menu of Nautilus (GNOME Files), for
# every user: /usr/share/nautilus-python/extensions/ (needs the
# python3-nautilus package; restart Nautilus with `nautilus -q` once).
# It runs `share send --choose FILES...`: lanshare asks which device, then
# sends, and reports the outcome as a desktop notification.
import subprocess

import gi

try:
    gi.require_version("Nautilus", "4.0")
except ValueError:
    gi.require_version("Nautilus", "3.0")
from gi.repository import GObject, Nautilus  # noqa: E402


class LanshareSendTo(GObject.GObject, Nautilus.MenuProvider):
    def get_file_items(self, *args):
        # Nautilus 43+ passes (files), older versions (window, files).
        files = args[-1]
        paths = [f.get_location().get_path() for f in files]
        if not paths or None in paths:
            # Only local files can be opened and sent.
            return []
        item = Nautilus.MenuItem(
            name="Lanshare::SendToDevice",
            label="Send to Device…",
            tip="Send with lanshare to a device on this network",
        )
        item.connect("activate", self.send, paths)
        return [item]

    def send(self, _item, paths):
        subprocess.Popen(
            ["share", "send", "--choose", *paths],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

"""Audio devices (ALSA's /proc/asound) and serial ports (/dev) for the voice and sensor pipelines."""

from __future__ import annotations

import posixpath
import re

from hal.probe_fs import Tree
from hal.profile import AudioDevice, SerialPort

_CARD_LINE = re.compile(r"^\s*(\d+)\s+\[(\S+)\s*\]:\s*(.*?)\s+-\s+(.*)$")
_PCM_LINE = re.compile(r"^(\d+)-(\d+):\s?(.*)$")


def parse_asound_cards(text: str) -> dict[int, tuple[str, str]]:
    """``/proc/asound/cards`` -> {card: (id, name)}; continuation lines hold the long name."""
    cards: dict[int, tuple[str, str]] = {}
    for line in text.splitlines():
        match = _CARD_LINE.match(line)
        if match:
            cards[int(match.group(1))] = (match.group(2), match.group(4).strip())
    return cards


def probe_audio(tree: Tree) -> tuple[AudioDevice, ...]:
    cards_text = tree.read("/proc/asound/cards")
    pcm_text = tree.read("/proc/asound/pcm")
    if cards_text is None and pcm_text is None:
        return ()
    cards = parse_asound_cards(cards_text or "")
    devices: list[AudioDevice] = []
    for line in (pcm_text or "").splitlines():
        match = _PCM_LINE.match(line.strip())
        if not match:
            if line.strip():
                tree.note(f"/proc/asound/pcm: cannot parse line {line.strip()[:60]!r}")
            continue
        card, device = int(match.group(1)), int(match.group(2))
        parts = [p.strip() for p in match.group(3).split(" : ")]
        streams = {p.split()[0] for p in parts if re.fullmatch(r"(playback|capture) \d+", p)}
        labels = [p for p in parts if not re.fullmatch(r"(playback|capture) \d+", p)]
        card_id, card_name = cards.get(card, (str(card), ""))
        devices.append(
            AudioDevice(
                card=card,
                device=device,
                card_id=card_id,
                card_name=card_name,
                name=next((label for label in reversed(labels) if label), ""),
                playback="playback" in streams,
                capture="capture" in streams,
            )
        )
    return tuple(devices)


def _uart_present(tree: Tree, name: str) -> bool:
    """8250 drivers register ttyS0..N placeholders on every PC; ``type`` 0 means no UART behind one."""
    if not name.startswith("ttyS"):
        return True
    kind = tree.read_int(f"/sys/class/tty/{name}/type")
    return kind is not None and kind != 0


def probe_serial(tree: Tree) -> tuple[SerialPort, ...]:
    by_target: dict[str, str] = {}
    unlinked: list[str] = []
    for entry in tree.glob("/dev/serial/by-id/*"):
        target = tree.readlink(entry)
        if target:
            by_target[target] = posixpath.basename(entry)
        else:
            unlinked.append(entry)
    ports: list[SerialPort] = []
    for pattern, kind in (
        ("/dev/ttyUSB*", "usb"),
        ("/dev/ttyACM*", "acm"),
        ("/dev/ttyAMA*", "uart"),
        ("/dev/ttyTHS*", "uart"),
        ("/dev/ttyS*", "uart"),
    ):
        for path in tree.glob(pattern):
            if _uart_present(tree, posixpath.basename(path)):
                ports.append(SerialPort(path=path, kind=kind, by_id=by_target.get(path)))
    # A recorded by-id entry that is not a link still says a USB serial device is there.
    ports.extend(SerialPort(path=p, kind="usb", by_id=posixpath.basename(p)) for p in unlinked)
    return tuple(ports)

# MicroPython sensor node: samples vibration, current, temperature and pressure
# and streams them to the edge box as protocol-v1 frames (see PROTOCOL.md).
#
# On the board: copy frames.py and this file (as main.py) with
#   mpremote cp firmware/frames.py :frames.py + cp firmware/sensor_node.py :main.py
# Targets: RP2040 (Pico, native USB CDC) and ESP32 (UART0 through its USB bridge,
# or native USB on the S2/S3). The board-specific part is ``main()`` and the
# ``read_*`` helpers; ``Node`` only needs a clock, a reader and a writer, so the
# tests run it unchanged under CPython against the host reader over a pty.
#
# Why these choices:
# - The node never blocks on the host: frames are written and forgotten. If the
#   USB cable is out, writes fail or fill a buffer and are dropped; the host sees
#   the gap by sequence number.
# - Timestamps are the node's uptime in ms (there is no RTC); the host maps them
#   to wall time and uses them for spacing, not as absolute time.
# - HELLO (the channel names) is sent at boot and every ``hello_every`` frames so
#   a host that is plugged in later still learns the channel names.
# - The sampling loop is paced by ticks_ms deadlines, not sleep(period): when a
#   read is slow, the next deadline is kept, and a missed one sets FLAG_OVERRUN.

try:
    import frames  # on the board, frames.py sits next to main.py
except ImportError:  # CPython (tests): the repository layout
    from firmware import frames

NODE_ID = 1
PERIOD_MS = 100  # 10 Hz
CHANNELS = ("vibration", "current", "bearing_temp", "pressure")


class Node:
    """The node's frame loop, independent of the board.

    read() -> sequence of floats (one per channel), write(bytes) -> None,
    ticks_ms() -> int. Errors from read() become NaN values, never a crash:
    a sensor that fails must show up on the host as a missing value.
    """

    def __init__(self, node_id, names, read, write, ticks_ms, period_ms=PERIOD_MS, hello_every=50):
        self.node_id = node_id
        self.names = tuple(names)
        self.read = read
        self.write = write
        self.ticks_ms = ticks_ms
        self.period_ms = period_ms
        self.hello_every = hello_every
        self.seq = 0
        self.flags = frames.FLAG_BOOT
        self.sent = 0
        self.write_errors = 0

    def _send(self, frame):
        try:
            self.write(frame)
            self.sent += 1
        except OSError:
            # host gone (cable out, buffer full): the frame is lost, the seq gap tells the host
            self.write_errors += 1
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.flags &= ~frames.FLAG_BOOT

    def hello(self):
        now = self.ticks_ms()
        self._send(frames.encode_hello(self.node_id, self.seq, now, self.names, self.flags))

    def sample(self, overrun=False):
        try:
            values = [float(v) for v in self.read()]
        except Exception:  # a failed sensor read: report NaN for every channel
            values = [float("nan")] * len(self.names)
        flags = self.flags | (frames.FLAG_OVERRUN if overrun else 0)
        now = self.ticks_ms()
        self._send(frames.encode_data(self.node_id, self.seq, now, values, flags))

    def step(self, overrun=False):
        """One period's work: a HELLO when due, then one DATA frame."""
        if self.seq % self.hello_every == 0:
            self.hello()
        self.sample(overrun)

    def run(self, sleep_ms, ticks_diff, count=-1):
        """Paced loop; ``count`` < 0 runs forever (the board), else that many steps."""
        deadline = self.ticks_ms()
        done = 0
        while count < 0 or done < count:
            late = ticks_diff(self.ticks_ms(), deadline)
            overrun = late > self.period_ms
            if overrun:  # fell behind by more than a period: skip ahead, say so
                deadline = self.ticks_ms()
            self.step(overrun)
            done += 1
            deadline += self.period_ms
            wait = ticks_diff(deadline, self.ticks_ms())
            if wait > 0:
                sleep_ms(wait)


# ---------------------------------------------------------------- board part


def _rms(adc, n=64, scale=1.0):
    """RMS of the AC part of n ADC samples (an analog accelerometer axis)."""
    total = 0
    total_sq = 0
    for _ in range(n):
        v = adc.read_u16()
        total += v
        total_sq += v * v
    mean = total / n
    var = total_sq / n - mean * mean
    return (var if var > 0 else 0) ** 0.5 * scale


def make_reader(machine):
    """Sensors wired as in PROTOCOL.md: ADC0 vibration, ADC1 current, ADC2 pressure, 1-Wire temp."""
    adc_vib = machine.ADC(26)
    adc_cur = machine.ADC(27)
    adc_pres = machine.ADC(28)
    temp = [float("nan")]
    ds = None
    try:
        import ds18x20
        import onewire

        ds = ds18x20.DS18X20(onewire.OneWire(machine.Pin(15)))
        roms = ds.scan()
    except Exception:
        roms = []
    state = {"n": 0}

    def read():
        # DS18B20 conversion takes 750 ms: start one, read it ~1 s later, hold the value between
        if ds is not None and roms:
            if state["n"] % 10 == 0:
                try:
                    temp[0] = ds.read_temp(roms[0])
                except Exception:
                    temp[0] = float("nan")
                ds.convert_temp()
        state["n"] += 1
        vib = _rms(adc_vib, scale=3.3 / 65535 / 0.3 * 9.81)  # ADXL335: 300 mV/g -> m/s^2
        amps = (adc_cur.read_u16() * 3.3 / 65535 - 1.65) / 0.066  # ACS712-30A: 66 mV/A
        bar = (adc_pres.read_u16() * 3.3 / 65535 - 0.33) / 2.64 * 10.0  # 0.5-4.5 V -> 0-10 bar
        return (vib, amps, temp[0], bar)

    return read


def main():  # pragma: no cover - runs on the board only
    import sys
    import time

    import machine

    try:
        import micropython

        micropython.kbd_intr(-1)  # 0x03 in a frame must not interrupt the program
    except Exception:
        pass
    out = sys.stdout.buffer

    def write(frame):
        out.write(frame)

    node = Node(NODE_ID, CHANNELS, make_reader(machine), write, time.ticks_ms)
    node.run(time.sleep_ms, time.ticks_diff)


if __name__ == "__main__":  # pragma: no cover
    main()

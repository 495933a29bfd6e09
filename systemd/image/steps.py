"""The checks image-check runs on the booted tree, each one a step of the table.

Every figure comes from inside: ``systemctl show``, ``journalctl``, the
daemon's own API and CLI. Commands run in the container's namespaces; the
API is reached over the shared loopback (the container keeps the host's
network, so the installer can reach PyPI as on a board).
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import (
    BIN,
    CHECK_DIR,
    DENIAL,
    EMULATION_DROPIN,
    ENGINE_PACKAGES,
    REPO,
    SRC,
    SUDO_SHIM,
    UNIT,
    free_port,
    kernel_log,
    readme_block,
)
from nspawn import HOST_ARCH, Container, ImageError


@dataclass(eq=False)
class Checks:
    box: Container
    tree: Path
    work: Path
    figures: dict[str, Any]
    extras: str = ""
    with_extras: str = ""
    port: int = field(init=False, default_factory=free_port)
    broker: Any = field(init=False, default=None)
    sub: subprocess.Popen[bytes] | None = field(init=False, default=None)
    reference: dict[str, Any] = field(init=False, default_factory=dict)
    started_at: str = field(init=False, default="")
    #: kernel log lines already there: the checks read only what the run adds
    kmsg_lines: int = field(init=False, default_factory=lambda: len(kernel_log()))

    @property
    def sub_log(self) -> Path:
        return self.work / "broker-messages.txt"

    # ------------------------------------------------------------ setup
    def fixtures(self) -> str:
        import numpy as np

        from tests.models_fixtures import build_bundle, signing_key
        from tests.modelzoo import MLP_MS, mlp_input, mlp_reference
        from tests.mosquitto import Mosquitto

        inside = self.tree / CHECK_DIR.lstrip("/")
        inside.mkdir(parents=True, exist_ok=True)
        key = signing_key()
        build_bundle(inside / "onnxruntime", MLP_MS, name="check-onnx", runtimes=("onnxruntime",))
        build_bundle(inside / "litert", MLP_MS, name="check-litert", runtimes=("litert",))
        (inside / "keys.txt").write_text(key.public_hex + "\n")
        x = mlp_input(MLP_MS, batch=MLP_MS.batch, seed=3)
        self.reference = {"x": x, "y": mlp_reference(MLP_MS, x)}
        rng = np.random.default_rng(7)
        rows = ["timestamp,vibration,current,bearing_temp"]
        for i in range(1500):
            hot = 25.0 if i >= 1200 else 0.0  # a bearing that starts to run hot
            rows.append(
                f"2026-12-05T08:{i // 60 % 60:02d}:{i % 60:02d},{4 + rng.normal(0, 0.2):.3f},"
                f"{50 + rng.normal(0, 1):.3f},{60 + hot + rng.normal(0, 0.5):.3f}"
            )
        (inside / "press.csv").write_text("\n".join(rows) + "\n")
        # the source as a board gets it, with the installer in it
        src = self.tree / SRC.lstrip("/")
        if not (self.tree / "usr/bin/sudo").exists():
            shim = self.tree / "usr/local/bin/sudo"
            shim.parent.mkdir(parents=True, exist_ok=True)
            shim.write_text(SUDO_SHIM)
            shim.chmod(0o755)
        files = subprocess.run(
            ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, check=True
        ).stdout.split(b"\0")
        for name in filter(None, files):
            path = REPO / name.decode()
            if path.is_file() and not name.startswith(b"build/"):
                (src / path.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, src / path.relative_to(REPO))
        self.trust_local_cas()
        self.broker = Mosquitto(tmp_dir=self.work).start()
        self.sub = subprocess.Popen(
            ["mosquitto_sub", "-p", str(self.broker.port), "-h", "127.0.0.1", "-t", "#", "-v", "-q", "1"],
            stdout=self.sub_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        etc = self.tree / "etc/edge-agent"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "agent.toml").write_text(
            f'data_dir = "/var/lib/edge-agent"\n\n[api]\nhost = "127.0.0.1"\nport = {self.port}\n\n[mqtt]\nurl = "{self.broker.url}"\n\n'
            f'[models]\ntrusted_keys = ["{key.public_hex}"]\n'
        )
        (etc / "agent.toml").chmod(0o640)
        # the debug trigger the watchdog step needs; the hardening itself is the shipped unit's
        dropin = self.tree / "etc/systemd/system/edge-agent.service.d"
        dropin.mkdir(parents=True, exist_ok=True)
        (dropin / "image-check.conf").write_text("[Service]\nEnvironment=EDGE_DEBUG_SIGUSR2=block-loop\n")
        if self.emulated:
            # qemu-user runs threads of its own, and unshare(CLONE_NEWUSER) refuses a threaded
            # process: PrivateUsers= cannot be set up under user-mode emulation (a board can)
            (dropin / "qemu-user.conf").write_text(EMULATION_DROPIN)
        return f"API port {self.port}, broker {self.broker.url}, {len(files)} source files"

    def trust_local_cas(self) -> None:
        """A site whose HTTPS goes through its own CA (a proxy) gets it in the tree, for apt and pip alike.

        As on a board behind such a proxy: the CA in the system bundle and pip told to use that
        bundle (pip's own certifi bundle does not have it). Nothing is changed where the host has none.
        """
        local = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
        if not local:
            return
        dest = self.tree / "usr/local/share/ca-certificates"
        dest.mkdir(parents=True, exist_ok=True)
        for crt in local:
            shutil.copy2(crt, dest / crt.name)
        shutil.copy2("/etc/ssl/certs/ca-certificates.crt", self.tree / "etc/ssl/certs/ca-certificates.crt")
        (self.tree / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")

    def close(self) -> None:
        if self.sub is not None:
            self.sub.terminate()
            self.sub.wait(10)
        if self.broker is not None:
            self.broker.stop()
            shutil.rmtree(self.broker.dir, ignore_errors=True)

    # ------------------------------------------------------------ helpers
    def show(self, *props: str) -> dict[str, str]:
        out = self.box.run(
            ["systemctl", "show", UNIT, *[f"--property={p}" for p in props]], timeout=60
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, since: str = "", unit: bool = True) -> str:
        argv = ["journalctl", "--no-pager", "-o", "short-monotonic"]
        if unit:
            argv += ["-u", UNIT]
        if since:
            argv += ["--since", since]
        return self.box.run(argv, timeout=120, check=False).stdout

    def now(self) -> str:
        return self.box.run(["date", "+%Y-%m-%d %H:%M:%S"], timeout=30).stdout.strip()

    def cli(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The CLI as a board owner runs it: as the service user, on the daemon's data dir."""
        return self.box.run(["runuser", "-u", "edge-agent", "--", BIN, *argv], timeout=timeout)

    def http(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def wait_active(self, timeout: float, not_pid: str = "") -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            st = self.show("ActiveState", "SubState", "MainPID", "NRestarts", "Result")
            if st["ActiveState"] == "active" and st["MainPID"] not in ("0", not_pid):
                return st
            if st["ActiveState"] == "failed" or time.monotonic() > deadline:
                raise ImageError(f"{UNIT} is {st}:\n{self.journal()[-4000:]}")
            time.sleep(1)

    # ------------------------------------------------------------ steps
    def install(self) -> str:
        self.started_at = self.now()
        line = readme_block()[0].split("  #")[0].strip()  # the README's install line, as written
        if "systemd/install.sh" not in line:
            raise ImageError(
                f"the README's first line under 'Running under systemd' is not the installer: {line}"
            )
        if self.extras:
            line += f" --extras {self.extras}"
        elif self.with_extras:
            line += f" --with {self.with_extras}"
        t0 = time.monotonic()
        out = self.box.run(["bash", "-c", f"cd {SRC} && {line}"], timeout=5400, check=False)
        if out.returncode != 0:
            raise ImageError(
                f"install.sh exited with {out.returncode}:\n{out.stdout}{out.stderr}\n{self.journal()[-5000:]}"
            )
        self.figures["install_s"] = round(time.monotonic() - t0, 1)
        listed = self.box.run(
            ["/opt/edge-agent/current/bin/python", "-m", "pip", "list", "--format=json"]
        ).stdout
        have = {p["name"].lower(): p["version"] for p in json.loads(listed)}
        self.figures["engines"] = {p: have.get(p, "not installed") for p in ENGINE_PACKAGES}
        extras = re.search(r"extras \[([^\]]*)\]", out.stdout)
        self.figures["extras"] = extras.group(1) if extras else ""
        return f"extras [{self.figures['extras']}]; " + ", ".join(
            f"{k} {v}" for k, v in self.figures["engines"].items()
        )

    def ready(self) -> str:
        st = self.wait_active(600)
        props = self.show(
            "Type",
            "NotifyAccess",
            "StatusText",
            "ExecMainStartTimestampMonotonic",
            "ActiveEnterTimestampMonotonic",
            "User",
        )
        if st["SubState"] != "running" or props["Type"] != "notify":
            raise ImageError(f"not running through notify: {st} {props}")
        start_s = (
            int(props["ActiveEnterTimestampMonotonic"]) - int(props["ExecMainStartTimestampMonotonic"])
        ) / 1e6
        self.figures["daemon_start_s"] = round(start_s, 2)
        status = self.box.run(["systemctl", "status", UNIT, "--no-pager", "--lines=0"], check=False).stdout
        head = next((ln.strip() for ln in status.splitlines() if "Active:" in ln), "")
        return f"READY after {start_s:.1f} s; {head}; status: {props['StatusText']!r}"

    def readme(self) -> str:
        """The README's other lines, run as written; each with what the README says it shows."""
        promises = {
            "systemctl status": "active (running)",
            "edge-agent status": "",
            "journalctl": "edge-agent ready",
        }
        ran = []
        for raw in readme_block()[1:]:
            line = raw.split("  #")[0].strip()
            out = self.box.run(["bash", "-c", f"cd {SRC} && {line}"], timeout=300, check=False)
            want = next((v for k, v in promises.items() if k in line), None)
            if out.returncode != 0 or want is None or want not in out.stdout:
                raise ImageError(
                    f"{line}: exit {out.returncode}, wanted {want!r}:\n{out.stdout[-2000:]}{out.stderr}"
                )
            ran.append(line.split()[0] if not line.startswith("sudo") else " ".join(line.split()[:3]))
        return f"{len(ran)} lines as written: " + "; ".join(ran)

    def watchdog_pings(self) -> str:
        first = self.show("WatchdogTimestampMonotonic", "WatchdogUSec")
        time.sleep(12)  # the daemon pings every third of WatchdogSec=30s
        second = self.show("WatchdogTimestampMonotonic")
        a, b = int(first["WatchdogTimestampMonotonic"]), int(second["WatchdogTimestampMonotonic"])
        if not a or b <= a:
            raise ImageError(f"no ping seen in 12 s: {first} then {second}")
        return f"WatchdogSec={first['WatchdogUSec']}; last ping moved {(b - a) / 1e6:.1f} s in 12 s"

    def healthz(self) -> str:
        url = f"http://127.0.0.1:{self.port}/healthz"
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=60).read().decode())"
        out = self.box.run(["python3", "-c", code], timeout=120).stdout.strip()
        if json.loads(out) != {"status": "ok"}:
            raise ImageError(out)
        return out

    def hardware(self) -> str:
        from hardware import hardware

        return hardware(self)

    @property
    def box_arch(self) -> str:
        return self.tree.parent.name

    @property
    def emulated(self) -> bool:
        return self.box_arch != HOST_ARCH

    def model(self, runtime: str, install: bool = True) -> str:
        import numpy as np

        name = {"onnxruntime": "check-onnx", "litert": "check-litert"}[runtime]
        if install:
            self.cli("models", "install", "--trusted-keys", f"{CHECK_DIR}/keys.txt", f"{CHECK_DIR}/{runtime}")
        x, y = self.reference["x"], self.reference["y"]
        body = {"inputs": {"x": {"dtype": "float32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}}}
        t0 = time.monotonic()
        first = self.http("POST", f"/v1/models/{name}/infer", body, timeout=600)
        first_s = time.monotonic() - t0
        got = np.asarray(first["outputs"]["y"]["data"], dtype=np.float32).reshape(
            first["outputs"]["y"]["shape"]
        )
        if not np.allclose(got, y, atol=1e-4, rtol=1e-3):
            raise ImageError(f"{runtime}: outputs differ from numpy by {float(np.abs(got - y).max()):.3g}")
        latencies = [self.http("POST", f"/v1/models/{name}/infer", body)["latency_ms"] for _ in range(10)]
        status = self.http("GET", f"/v1/models/{name}")
        used = json.dumps(status)
        if runtime not in used:
            raise ImageError(f"the model did not run on {runtime}: {used[:400]}")
        median = statistics.median(latencies)
        self.figures[f"infer_ms_{runtime}"] = round(median, 3)
        self.figures[f"first_infer_s_{runtime}"] = round(first_s, 2)
        diff = float(np.abs(got - y).max())
        return f"max |diff| vs numpy {diff:.2g}; median {median:.2f} ms (batch {x.shape[0]}), load+first {first_s:.1f} s"

    def replay(self) -> str:
        out = self.cli("sensors", "replay", f"{CHECK_DIR}/press.csv", "--learn", "1000", "--json").stdout
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        if not events:
            raise ImageError(f"no alert from a bearing running 25 °C hot:\n{out[-2000:]}")
        channels = sorted(
            {c["channel"] for e in events for c in e.get("channels") or [] if isinstance(c, dict)}
        )
        return f"{len(events)} alert transition(s); channels {channels}"

    def outbox(self) -> str:
        deadline = time.monotonic() + 180
        mqtt: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = json.loads(self.cli("status", "--json", timeout=120).stdout)
            mqtt = status.get("mqtt") or status.get("sync") or {}
            box: dict[str, Any] = mqtt["outbox"] if isinstance(mqtt.get("outbox"), dict) else {}
            received = self.sub_log.read_text(errors="replace").splitlines() if self.sub_log.exists() else []
            if mqtt.get("connected") and box.get("pending", 1) == 0 and received:
                topics = sorted({line.split(" ", 1)[0] for line in received})
                return f"connected; 0 to send; the broker got {len(received)} message(s) on {topics[:3]}"
            time.sleep(3)
        raise ImageError(f"outbox not drained in 180 s: {json.dumps(mqtt)[:600]}")

    def exposure(self) -> str:
        pattern = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")
        inside = self.box.run(["systemd-analyze", "security", UNIT, "--no-pager"], check=False)
        unit = REPO / "systemd" / UNIT
        if self.emulated:  # the shipped unit with the same drop-in, which systemd merges when booted
            unit = self.work / UNIT
            unit.write_text((REPO / "systemd" / UNIT).read_text() + "\n" + EMULATION_DROPIN)
        offline = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", str(unit)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        a, b = pattern.search(inside.stdout + inside.stderr), pattern.search(offline.stdout + offline.stderr)
        if not a or not b:
            raise ImageError(f"no exposure line:\n{inside.stdout[-1500:]}\n{offline.stdout[-1500:]}")
        self.figures["exposure"] = {"booted": float(a.group(1)), "offline": float(b.group(1))}
        if a.group(1) != b.group(1):
            raise ImageError(f"booted {a.group(1)} != offline {b.group(1)}")
        return f"booted {a.group(1)} = offline {b.group(1)}"

    def blocked_loop(self) -> str:
        before = self.show("MainPID", "NRestarts")
        since = self.now()
        self.box.run(["systemctl", "kill", "--kill-who=main", "--signal=SIGUSR2", UNIT])
        t0 = time.monotonic()
        after = self.wait_active(300, not_pid=before["MainPID"])
        back_s = time.monotonic() - t0
        log = self.journal(since)
        timeout_line = next((ln for ln in log.splitlines() if "Watchdog timeout" in ln), "")
        if int(after["NRestarts"]) <= int(before["NRestarts"]) or not timeout_line:
            raise ImageError(f"no watchdog restart: {before} -> {after}\n{log[-3000:]}")
        reason = next(
            (ln for ln in log.splitlines() if "Main process exited" in ln or "Failed with result" in ln), ""
        )
        self.figures["watchdog_restart_s"] = round(back_s, 1)
        return f"{timeout_line.split(': ', 1)[-1]}; {reason.split(': ', 1)[-1]}; active again after {back_s:.0f} s"

    def denials(self) -> str:
        unit_log = self.journal(self.started_at)
        system_log = self.journal(self.started_at, unit=False)
        ours = [ln for ln in unit_log.splitlines() if DENIAL.search(ln)]
        kernel = [ln for ln in system_log.splitlines() if re.search(r"audit|seccomp", ln, re.I)]
        kmsg = [
            ln
            for ln in kernel_log()[self.kmsg_lines :]
            if re.search(r"type=1326|seccomp|DENIED", ln)
            and re.search(r'comm="edge-agent"|/opt/edge-agent/', ln)
        ]
        if ours or kernel or kmsg:
            raise ImageError("\n".join((ours + kernel + kmsg)[:40]))
        return f"none in {len(unit_log.splitlines())} unit lines, {len(system_log.splitlines())} journal lines and the kernel log"

    def stop(self) -> str:
        since = self.now()
        t0 = time.monotonic()
        self.box.run(["systemctl", "stop", UNIT], timeout=120)
        took = time.monotonic() - t0
        st = self.show("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
        log = self.journal(since)
        killed = [ln for ln in log.splitlines() if "SIGKILL" in ln or "timed out" in ln]
        if (
            st["ActiveState"] != "inactive"
            or st["Result"] != "success"
            or st["ExecMainStatus"] != "0"
            or killed
        ):
            raise ImageError(f"{st}\n{log[-2000:]}")
        self.figures["stop_s"] = round(took, 2)
        return f"inactive, Result=success, exit 0, in {took:.1f} s"

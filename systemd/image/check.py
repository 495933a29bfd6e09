"""Boot a Debian 12 tree with systemd as PID 1, install edge-agent with systemd/install.sh, and check it.

    sudo .venv/bin/python systemd/image/check.py --arch amd64     # x86_64 (CI: tests/test_systemd_boot.py)
    sudo .venv/bin/python systemd/image/check.py --arch arm64     # ARM64 under qemu-user (make image-check)

Needs root, debootstrap, systemd-nspawn (systemd-container), qemu-user-static
for arm64, mosquitto on the host, network to the Debian mirror and PyPI (the
installer fetches wheels as on a board). Run it with the project's venv: the
fixtures (signed model bundles, a sensor CSV) are written with the project's
own code. Ends with one table: step, result, seconds; exit 1 when a step failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(HERE), str(REPO)]

from nspawn import (  # noqa: E402
    BOARD_PROC,
    HOST_ARCH,
    Container,
    ImageError,
    Unobservable,
    build_base,
    emulated_board,
    ensure_binfmt,
    fresh_copy,
)
from steps import Checks  # noqa: E402
from stops import stop_right_after_ready  # noqa: E402
from strict import strict_seccomp, updater_armed  # noqa: E402
from update import AgentUpdates  # noqa: E402
from voice import transcribe  # noqa: E402


@dataclass
class Step:
    name: str
    result: str
    seconds: float
    detail: str = ""


@dataclass
class Report:
    arch: str
    steps: list[Step] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(not s.result.startswith("FAIL") for s in self.steps)

    def run(self, name: str, fn: Callable[[], str | None], *, fatal: bool = False) -> bool:
        t0 = time.monotonic()
        try:
            detail = fn() or ""
            result = "ok"
        except Unobservable as exc:
            detail, result = str(exc), "n/a"
        except Exception as exc:  # every failure goes into the table; fatal ones end the run
            detail = str(exc).strip()
            result = "FAIL"
        step = Step(name, result, round(time.monotonic() - t0, 1), detail)
        self.steps.append(step)
        line = f"[{self.arch}] {name}: {result} ({step.seconds:.1f} s)"
        print(line + (f" - {detail.splitlines()[0][:200]}" if detail else ""), flush=True)
        if result == "FAIL" and detail.count("\n"):
            print(detail[-3000:], flush=True)
        if result == "FAIL" and fatal:
            raise SystemExit(self.finish())
        return result == "ok"

    def table(self) -> str:
        width = max(len(s.name) for s in self.steps) if self.steps else 10
        lines = [f"{'step':<{width}}  {'result':<6}  {'seconds':>7}  detail", "-" * (width + 40)]
        for s in self.steps:
            first = s.detail.splitlines()[0][:110] if s.detail else ""
            lines.append(f"{s.name:<{width}}  {s.result:<6}  {s.seconds:>7.1f}  {first}")
        total = sum(s.seconds for s in self.steps)
        lines.append(f"{'total':<{width}}  {'ok' if self.ok else 'FAIL':<6}  {total:>7.1f}")
        return "\n".join(lines)

    def finish(self, json_out: Path | None = None) -> int:
        print("\n" + self.table(), flush=True)
        if json_out is not None:
            json_out.write_text(
                json.dumps(
                    {
                        "arch": self.arch,
                        "ok": self.ok,
                        "steps": [s.__dict__ for s in self.steps],
                        "figures": self.figures,
                    },
                    indent=2,
                )
            )
        return 0 if self.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", choices=["amd64", "arm64"], default=HOST_ARCH)
    parser.add_argument("--build-dir", type=Path, default=REPO / "build" / "image")
    parser.add_argument(
        "--fresh", action="store_true", help="debootstrap again even when a cached tree exists"
    )
    parser.add_argument("--keep", action="store_true", help="leave the booted tree on disk after the run")
    parser.add_argument("--extras", default="", help="installer extras (default: the installer's choice)")
    parser.add_argument(
        "--with",
        dest="with_extras",
        default="voice,voice-models",
        help="extras added to the installer's choice (default: voice,voice-models; '' for none)",
    )
    parser.add_argument("--json-out", type=Path, help="write the table and figures as JSON here")
    args = parser.parse_args(argv)
    try:
        import os

        if os.geteuid() != 0:
            print("image check: run as root (it debootstraps and boots a container)", file=sys.stderr)
            return 2
    except AttributeError:
        return 2

    work = args.build_dir / args.arch
    work.mkdir(parents=True, exist_ok=True)
    base, run = work / "base", work / "run"
    log = work / "check.log"
    log.write_text("")
    report = Report(args.arch)
    if args.fresh and (base / ".edge-image-stamp").exists():
        (base / ".edge-image-stamp").unlink()

    def tree() -> str:
        ensure_binfmt(args.arch)
        built = build_base(base, args.arch, log)
        return f"debootstrapped {base}" if built else f"cached {base}"

    report.run(f"debootstrap Debian 12 {args.arch} tree", tree, fatal=True)
    report.run("fresh copy of the tree", lambda: fresh_copy(base, run), fatal=True)
    pip_cache = work / "pip-cache"
    pip_cache.mkdir(exist_ok=True)
    box = Container(run, log, binds={pip_cache: "/root/.cache/pip"})
    checks = Checks(box, run, work, report.figures, extras=args.extras, with_extras=args.with_extras)
    try:
        report.run("fixtures: signed ONNX/LiteRT bundles, sensor CSV, broker", checks.fixtures, fatal=True)

        def boot() -> str:
            if args.arch != HOST_ARCH:
                emulated_board(run, REPO / "tests" / "boards" / "rpi5")
            seconds = box.boot(timeout=600)
            if args.arch != HOST_ARCH:
                for name, target in BOARD_PROC.items():
                    box.run(["mount", "--bind", f"/srv/board/{name}", target])
            report.figures["boot_s"] = round(seconds, 1)
            return f"systemd PID 1 reached running in {seconds:.1f} s"

        report.run("boot with systemd as PID 1 (systemd-nspawn)", boot, fatal=True)
        report.run("README: sudo systemd/install.sh (wheels from PyPI)", checks.install, fatal=True)
        report.run("active (running) through Type=notify READY", checks.ready, fatal=True)
        report.run("GET /healthz", checks.healthz)  # first: the API's web stack loads on the first call
        report.run("README 'Running under systemd' lines", checks.readme)
        report.run("watchdog pings (WatchdogTimestamp advances)", checks.watchdog_pings)
        report.run("edge-agent hardware --json", checks.hardware)
        report.run("ONNX model through onnxruntime", lambda: checks.model("onnxruntime"))
        report.run("the same model through LiteRT", lambda: checks.model("litert"))
        report.run("sensors replay CSV", checks.replay)
        if "voice" in (args.extras or args.with_extras).split(","):
            report.run("a WAV transcribed by the daemon (Whisper)", lambda: transcribe(checks))
        report.run("outbox drained to the broker", checks.outbox)
        report.run("systemd-analyze security = offline", checks.exposure)
        report.run("updater path unit armed", lambda: updater_armed(checks))
        report.run("blocked event loop: watchdog kills, restarts", checks.blocked_loop)
        updates = AgentUpdates(checks)
        if report.run("update: good and broken releases built, signed", updates.publish):
            if report.run("update: signed, staged, installed by the updater unit", updates.install_good):
                report.run("update: broken release switched back after health check", updates.rollback_broken)
        report.run("no sandbox denials in the journal", checks.denials)
        report.run("seccomp set to kill: engines, sensors, outbox", lambda: strict_seccomp(checks))
        tries = 3
        report.run(
            "stop right after READY (session resuming): exit 0", lambda: stop_right_after_ready(checks, tries)
        )
        report.run("systemctl stop is clean", checks.stop)
    except ImageError as exc:
        print(f"image check: {exc}", file=sys.stderr)
    finally:
        checks.close()
        box.poweroff()
        if not args.keep and run.exists():
            shutil.rmtree(run, ignore_errors=True)
    return report.finish(args.json_out)


if __name__ == "__main__":
    sys.exit(main())

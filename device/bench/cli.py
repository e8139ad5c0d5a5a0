"""`python -m device bench` and `python -m device bench-remote`.

`bench` measures, for each model variant present in the run (``export/int8``, ``export/float32``,
``export/float16``) and each thread count (1 … cores):

- **raw** — the interpreter alone (`device.bench.raw`), as TFLite's ``benchmark_model`` does it:
  load time, first inference, warm-up runs, then timed runs until both ``--runs`` and
  ``--min-seconds`` are reached: mean, std, min, p50, p95, p99, max, and the spread.
- **pipeline** — the daemon's own code in a fresh child process (`device.bench.pipeline`): per-stage
  p50/p95/p99, end-to-end fps, dropped frames, peak RSS, CPU use, time to first result, and raw
  invokes on the daemon's own interpreter interleaved with it, for pipeline ÷ raw.
- **bare loop** — numpy + OpenCV + the runtime in a sequential loop over the same source, in its
  own process (`device.bench.bareloop`): the floor the daemon is held against.

It writes ``bench.json``, ``bench.md`` and ``bench.png`` to ``<run>/bench/`` (or ``--out``), and
prints last a summary (bench.json's ``summary``): the pipeline's fps and latency at the daemon's
default thread count, that fps ÷ the best over the thread counts, pipeline ÷ raw at 1 thread, the
peak RSS of `python -m device run` with every output against the bare loop's, `--help` and exec →
first result, the runtime's two APIs (`Interpreter`, `CompiledModel`) on the same model, and the
raw median beside the one of the runtime's own `litert-benchmark` (`device.bench.apis`). One fps
figure throughout: 1000 ÷ the median time per frame. ``--repeat`` measures everything again;
figures are medians over the rounds.

On a Raspberry Pi 4/5 (``/proc/device-tree/model``) the tables get a column with the published
figures for MobileNetV2 1.0 224 (`device.bench.published`). The AI Camera (``--variants imx500
--source imx500``, on its own) is measured as the daemon's loop only (`device.bench.sensor`).

`bench-remote` runs the same tool on the Pi over ssh (`device.bench.remote`).

Only the standard library and numpy are imported at start; the runtime, OpenCV, the daemon and
matplotlib are imported where they are used.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from typing import Any

from device.bench.markdown import efficiency_lines, summary_lines
from device.bench.suite import BenchOptions
from device.flags import add_option


def parse_threads(text: str) -> list[int]:
    try:
        vals = sorted({int(x) for x in text.replace(" ", "").split(",") if x})
    except ValueError:
        raise argparse.ArgumentTypeError(f"threads {text!r}: expected a comma-separated list such as 1,2,4") from None
    if not vals or vals[0] < 1:
        raise argparse.ArgumentTypeError(f"threads {text!r}: each thread count must be ≥ 1")
    return vals


def parse_cpus(text: str) -> list[int]:
    """'0-3' / '2,3' / '0,2-3' → sorted CPU ids (for --cpus)."""
    out: set[int] = set()
    try:
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cpus {text!r}: expected CPU ids such as 0-3 or 2,3") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"cpus {text!r}: no CPU ids")
    return sorted(out)


def parse_resolution(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 8 or int(m.group(2)) < 8:
        raise argparse.ArgumentTypeError(f"resolution {text!r}: expected WIDTHxHEIGHT, e.g. 640x480")
    return int(m.group(1)), int(m.group(2))


def _variants(text: str) -> list[str]:
    return [v for v in text.split(",") if v]


@dataclass(frozen=True)
class Flag:
    """One bench flag: its name, the BenchOptions field it sets, and how argparse reads it."""

    name: str  # kebab-case; the snake_case spelling is a hidden alias (device.flags.add_option)
    field: str
    kwargs: dict[str, Any]

    @property
    def default(self) -> Any:
        return getattr(BenchOptions(), self.field)

    def as_text(self, value: Any) -> list[str]:
        """The flag and its value as `device bench` reads them back (for bench-remote)."""
        if isinstance(self.default, bool):  # the --no-* switches: given = not the default
            return [self.name]
        if isinstance(value, (list, tuple)):
            return [self.name, ("x" if self.field == "resolution" else ",").join(map(str, value))]
        return [self.name, str(value)]


_DEFAULT = " (default: %(default)s)"
BENCH_FLAGS = (
    Flag(
        "--variants",
        "variants",
        dict(type=_variants, help="comma-separated subset of int8,float32,float16 (none: all present)"),
    ),
    Flag(
        "--threads",
        "threads",
        dict(type=parse_threads, help="comma-separated thread counts (none: 1 … available cores)"),
    ),
    Flag("--runs", "runs", dict(type=int, help="raw: timed invokes, at least" + _DEFAULT)),
    Flag(
        "--min-seconds",
        "min_seconds",
        dict(type=float, help="raw: time the invokes for at least this long" + _DEFAULT),
    ),
    Flag(
        "--max-seconds",
        "max_seconds",
        dict(type=float, help="raw: stop after this long whatever --runs says" + _DEFAULT),
    ),
    Flag(
        "--warmup-runs",
        "warmup_runs",
        dict(type=int, help="raw: untimed invokes before timing" + _DEFAULT),
    ),
    Flag(
        "--no-pipeline",
        "pipeline",
        dict(action="store_false", help="raw interpreter only"),
    ),
    Flag(
        "--pipeline-seconds",
        "pipeline_seconds",
        dict(type=float, help="pipeline: measured window per run" + _DEFAULT),
    ),
    Flag(
        "--pipeline-warmup-seconds",
        "pipeline_warmup_seconds",
        dict(type=float, help="pipeline: results discarded before the window opens" + _DEFAULT),
    ),
    Flag(
        "--slice-seconds",
        "slice_seconds",
        dict(
            type=float,
            help="pipeline: the window alternates slices of this length of the daemon's loop and of raw "
            "invokes on its interpreter (the reference of pipeline ÷ raw)" + _DEFAULT,
        ),
    ),
    Flag(
        "--source",
        "source",
        dict(
            help="pipeline source: synthetic, picamera2, a camera index, a video file (read unpaced, "
            "looped), or config (the --config file's own source)" + _DEFAULT
        ),
    ),
    Flag(
        "--config",
        "config",
        dict(
            help="device YAML whose crop/decision/capture/model sections the pipeline uses (none: "
            "the daemon's defaults); its outputs are replaced by a JSONL sink to /dev/null"
        ),
    ),
    Flag(
        "--resolution",
        "resolution",
        dict(
            type=parse_resolution,
            help="pipeline frame size WIDTHxHEIGHT (synthetic/cameras; a file has its own; default: 640x480)",
        ),
    ),
    Flag("--repeat", "repeat", dict(type=int, help="measure every (raw, pipeline) pair this many times" + _DEFAULT)),
    Flag(
        "--cpus",
        "cpus",
        dict(
            type=parse_cpus,
            help="pin the benchmark and its children to these CPUs, e.g. 2-3 (none: no pinning); "
            "thread counts then default to 1 … len(cpus)",
        ),
    ),
    Flag(
        "--no-baseline",
        "baseline",
        dict(
            action="store_false",
            help="skip the bare-loop reference (numpy + OpenCV + runtime only) at the default thread count "
            "(by default it is measured)",
        ),
    ),
    Flag(
        "--no-extras",
        "extras",
        dict(
            action="store_false",
            help="skip `device run` with every output (peak RSS, exec → first result), --help, the runtime's "
            "two APIs and litert-benchmark (by default they are measured)",
        ),
    ),
    Flag(
        "--compare-board",
        "compare_board",
        dict(
            choices=["auto", "pi4", "pi5", "none"],
            help="add the published figures of this board (auto: /proc/device-tree/model)" + _DEFAULT,
        ),
    ),
)


def add_bench_args(p: argparse.ArgumentParser) -> None:
    """The measurement flags, shared by `bench` and `bench-remote` (which passes them on)."""
    for flag in BENCH_FLAGS:
        add_option(p, flag.name, dest=flag.field, default=flag.default, **flag.kwargs)


def bench_options(args: argparse.Namespace, **fields: Any) -> BenchOptions:
    """The BenchOptions the parsed bench flags (and `fields`) describe."""
    values = {flag.field: getattr(args, flag.field) for flag in BENCH_FLAGS}
    for name in ("variants", "threads", "cpus"):
        values[name] = tuple(values[name]) if values[name] is not None else None
    return BenchOptions(**values, **fields)


def passthrough_flags(args: argparse.Namespace) -> list[str]:
    """The bench flags the user set (those not at their default), serialised again for the
    device's `device bench`."""
    out: list[str] = []
    for flag in BENCH_FLAGS:
        value = getattr(args, flag.field, flag.default)
        if value != flag.default:
            out += flag.as_text(value)
    return out


def add_parser(subparsers: Any) -> None:
    """Register `bench` and `bench-remote` with device/cli.py's subparsers."""
    p = subparsers.add_parser(
        "bench",
        help="latency benchmark here: raw interpreter and the daemon's pipeline",
        description="On-device latency benchmark: the interpreter alone, and the daemon's whole code path.",
    )
    add_option(
        p,
        "--model-dir",
        default="runs/latest",
        help="a run dir (export/<variant>/) or one model dir" + _DEFAULT,
    )
    p.add_argument("--out", default=None, help="output dir (none: <run>/bench)")
    add_bench_args(p)
    p.set_defaults(func=_cmd_bench)
    add_remote_parser(subparsers)


def add_remote_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench-remote",
        help="run `bench` on Pis over ssh in the deployed release and bring the results back",
        description="Run `python -m device bench` on each host over ssh, in the deployed release "
        "(<remote-dir>/current: its venv, model and device.yaml), then fetch bench.json/.md/.png "
        "and redraw the plot here. The bench flags below are passed through.",
    )
    p.add_argument("--hosts", required=True, help="comma-separated user@host[:port] (measured one after the other)")
    p.add_argument("--port", type=int, default=22, help="ssh port (a host's own :port wins)" + _DEFAULT)
    add_option(
        p,
        "--ssh-key",
        default=None,
        help="private key for ssh (none: ssh's own choice or the agent)",
    )
    add_option(
        p,
        "--known-hosts",
        default=None,
        help="known_hosts file to check host keys against (none: ~/.ssh/known_hosts)",
    )
    add_option(
        p,
        "--connect-timeout",
        type=int,
        default=10,
        help="ssh connect timeout, seconds" + _DEFAULT,
    )
    add_option(
        p,
        "--remote-dir",
        default="faceedge",
        help="the deploy dir on the device (relative = under the user's home)" + _DEFAULT,
    )
    add_option(
        p,
        "--stop-service",
        default=None,
        choices=["systemd-user", "systemd-system"],
        help="stop faceedge.service while measuring (it competes for CPU and camera), start it after",
    )
    p.add_argument("--out", default=None, help="local results dir (none: runs/bench/<host>-<UTC timestamp>)")
    add_bench_args(p)
    p.set_defaults(func=_cmd_bench_remote)


def _cmd_bench(args: argparse.Namespace) -> int:
    from device.bench.suite import run

    report = run(bench_options(args, model_dir=args.model_dir, out=args.out), echo=print)
    print_summary(report)
    return 0


def _cmd_bench_remote(args: argparse.Namespace) -> int:
    from device.bench.remote import run_remote

    reports = run_remote(
        args.hosts,
        port=args.port,
        ssh_key=args.ssh_key,
        known_hosts=args.known_hosts,
        connect_timeout=args.connect_timeout,
        remote_dir=args.remote_dir,
        out=args.out,
        bench_args=passthrough_flags(args),
        stop_service=args.stop_service,
    )
    for host, report in reports.items():
        print(f"== {host}: {report['remote']['local']}")
        print_summary(report)
    return 0


def print_summary(report: dict[str, Any]) -> None:
    """The warnings, the files written, the efficiency, and last the summary."""
    for warning in report.get("warnings", []):
        print(f"warning: {warning}")
    print("wrote " + ", ".join(report["outputs"].values()))
    for line in efficiency_lines(report):
        print(line)
    for line in summary_lines(report.get("summary") or {}):  # last: the figures a reader looks for
        print(line)


def main(argv: list[str] | None = None) -> int:
    """`python -m device.bench ...` (the CLI is `python -m device bench`)."""
    from device.cli import standalone

    return standalone(add_parser, "python -m device.bench", sys.argv[1:] if argv is None else argv)

"""``python -m perf.flood --profile quick|full|burst1000|FILE.yaml [--kubeconfig K] [--out PATH] [--busy N]``

Parses flags only; everything else is ``perf.flood.run``. Writes PATH.json, PATH.md and
PATH-*.png; exits 1 when a correctness check fails (every log verified byte-identical, no
execution lost, Jobs cleaned up), and also when a performance target is missed with --strict.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from datetime import date
from pathlib import Path

from perf.common import REPO, start_busy, stop_busy
from perf.flood import profile as profiles
from perf.flood import report
from perf.flood.run import Options, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", help="built-in name (perf/profiles/*.yaml) or a YAML file")
    parser.add_argument("--kubeconfig", help="cluster to flood (default: $KUBECONFIG with "
                        "FABRIC_E2E_USE_KUBECONFIG=1, else the devcluster, started if needed)")
    parser.add_argument("--out", help="output path without suffix (default perf/results/flood-<profile>-<date>)")
    parser.add_argument("--log-source", choices=("auto", "kwok", "container"), default="auto",
                        help="kwok: generated CRI files served by kwok; container: busybox writes the log "
                        "(kind/real clusters); auto: kwok when every node is a kwok node")
    parser.add_argument("--workdir", help="where generated logs and the gateway's store go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (generated logs, gateway store)")
    parser.add_argument("--no-install", dest="install", action="store_false",
                        help="do not apply the CRD, namespace and RBAC from manifests/")
    parser.add_argument("--attach-operator-metrics", metavar="URL",
                        help="use a running operator (its /metrics URL) instead of starting one")
    parser.add_argument("--attach-operator-pid", type=int, help="its pid, for RSS/CPU from /proc")
    parser.add_argument("--attach-gateway", metavar="URL", help="use a running gateway (base URL)")
    parser.add_argument("--attach-gateway-pid", type=int, help="its pid, for RSS/CPU from /proc")
    parser.add_argument("--attach-gateway-token-file", help="its internal token (when this run starts the operator)")
    parser.add_argument("--attach-log-dir", help="the attached operator's --log-dir (no gateway)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a performance target is missed too")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="N processes spinning on a CPU each for the whole run (a loaded machine; "
                        "the command line in the report says so)")
    args = parser.parse_args(argv)

    profile = profiles.load(args.profile)
    out = Path(args.out) if args.out else REPO / "perf" / "results" / f"flood-{profile.name}-{date.today()}"
    if out.suffix in (".json", ".md"):
        out = out.with_suffix("")
    opts = Options(kubeconfig=args.kubeconfig, log_source=args.log_source, workdir=args.workdir, keep=args.keep,
                   install=args.install, attach_operator_metrics=args.attach_operator_metrics,
                   attach_operator_pid=args.attach_operator_pid, attach_gateway=args.attach_gateway,
                   attach_gateway_pid=args.attach_gateway_pid,
                   attach_gateway_token_file=args.attach_gateway_token_file, attach_log_dir=args.attach_log_dir,
                   command=" ".join(shlex.quote(a) for a in ["python", "-m", "perf.flood", *sys.argv[1:]]))
    spinners = start_busy(args.busy)
    try:
        summary = asyncio.run(run(profile, opts))
    finally:
        stop_busy(spinners)
    written = report.write(summary, out)
    for check in summary["checks"] + summary["perf_checks"]:
        print(f"{'PASS' if check['pass'] else 'FAIL'}  {check['name']}: {check['value']}")
    for key, value in summary["ratios"].items():
        print(f"ratio {key}: {value:.2f}")
    print("wrote " + ", ".join(str(p) for p in written))
    failed = not summary["ok"] or (args.strict and not all(c["pass"] for c in summary["perf_checks"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Draw the dashboards of a loaded stack: the pictures in the README.

    python -m mqttlb.dashboards.snapshot --out docs/images

Starts a throwaway stack on free loopback ports, runs a bounded scripted load (churning QoS 1
sensors and two heavy publishers through Envoy, then one broker driven hot directly for a
while), lets the webhook react and recover, and renders every dashboard with
`mqttlb dashboards render` over the run while the steady load still runs, so the stats (the
range's last value) show the loaded cluster, not the idle moment after the load generator ends.
Takes about four minutes.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mqttlb.commandline import parse_args
from mqttlb.loadgen.hot import HotNodeDriver, fan_out_subscribers
from mqttlb.logs import add_log_flags
from mqttlb.stack.builders import WEB_USER
from mqttlb.stack.ephemeral import FAST_PARAMS, running_stack, stack_config

log = logging.getLogger("mqttlb.dashboards.snapshot")

WARM_UP_SECONDS = 40
HOT_SECONDS = 100
COOL_DOWN_SECONDS = 55
RENDER_SECONDS = 60  # the load generator runs on this much longer, past the end of the rendered range


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mqttlb.dashboards.snapshot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for <dashboard uid>.png")
    parser.add_argument("--seed", type=int, default=7, help="load generator seed (default 7)")
    add_log_flags(parser)
    args = parse_args(parser, argv)

    state = Path(tempfile.mkdtemp(prefix="mqttlb-snapshot-")) / "state"
    cfg = stack_config(state, nodes=3, params=FAST_PARAMS, scrape_interval="2s", node_cpu_cores=0.25)
    total = WARM_UP_SECONDS + HOT_SECONDS + COOL_DOWN_SECONDS
    with running_stack(cfg, out=lambda line: log.info("[stack] %s", line)) as stack:
        load = subprocess.Popen(
            [
                sys.executable, "-m", "mqttlb.cli", "loadgen", "--port", str(cfg.ports.envoy_listener),
                "--duration", str(total + RENDER_SECONDS), "--seed", str(args.seed), "--quiet",
                "--profile", "sensor:150:rate=0.5,qos=1,session=exp:20",
                "--profile", "heavy:2:rate=300,size=256,qos=0",
                "--profile", "sub:2",
            ]
        )
        try:
            log.info("warm-up: %d s of churning sensors through Envoy", WARM_UP_SECONDS)
            time.sleep(WARM_UP_SECONDS)
            hot_port = cfg.broker_ports[0]
            log.info("node1 driven hot directly for %d s", HOT_SECONDS)
            with (
                fan_out_subscribers(hot_port, 4),
                HotNodeDriver(hot_port, publishers=4, rate=600.0, size=256, duration=HOT_SECONDS),
            ):
                time.sleep(HOT_SECONDS)
            log.info("cool-down: %d s", COOL_DOWN_SECONDS)
            time.sleep(COOL_DOWN_SECONDS)
            if load.poll() is not None:
                raise RuntimeError(f"the load generator ended early (exit {load.returncode})")
            render = subprocess.run(
                [
                    sys.executable, "-m", "mqttlb.cli", "dashboards", "render",
                    "--prometheus", f"http://127.0.0.1:{cfg.ports.prometheus}",
                    "--prometheus-user", WEB_USER, "--prometheus-password-file", str(stack.paths.web_password),
                    "--out", str(args.out), "--range", f"{total + 10}s", "--scrape-interval", "2s",
                ],
                check=False,
                timeout=RENDER_SECONDS * 5,
            )
        finally:
            if load.poll() is None:
                load.terminate()
                load.wait(timeout=30)
        log.info("audit log of the run: %s", stack.paths.webhook_dir / "audit.jsonl")
    return render.returncode


if __name__ == "__main__":
    raise SystemExit(main())

"""`mqttlb dashboards`: generate, check, render and list the Grafana dashboards.

generate   write dashboards/generated/<uid>.json from the Python sources (byte-identical on rerun)
check      exit 1 and name each generated file that drifted from its source
render     draw every dashboard to <out>/<uid>.png from a live Prometheus (no Grafana needed)
queries    print every panel's queries with the template variables resolved
lint       exit 1 and list each violation of grafana/dashboard-linter's rules (mqttlb/dashboards/lint.py)
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mqttlb.commandline import argument_type, parse_args, refuse, seconds_up_to
from mqttlb.dashboards import build
from mqttlb.dashboards.execute import (
    Window,
    load_dashboard,
    load_dashboards,
    resolve_dashboard,
    run_annotations,
    run_panels,
)
from mqttlb.dashboards.lint import lint
from mqttlb.dashboards.resolve import ResolveError, parse_duration
from mqttlb.drift import report
from mqttlb.logs import add_log_flags
from mqttlb.params import DEFAULT_PARAMS_FILE, load_params
from mqttlb.prometheus_api import PrometheusApi, PrometheusApiError, check_url
from mqttlb.secure import BasicAuth, ClientAuth, client_session

log = logging.getLogger("mqttlb.dashboards")


def _variable(text: str) -> tuple[str, list[str]]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier() or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE[,VALUE...], got {text!r}")
    values = [v for v in value.split(",") if v]
    if not values:
        raise argparse.ArgumentTypeError(f"no value in {text!r}")
    return name, values


_duration = argument_type(parse_duration, ResolveError)
_url = argument_type(check_url)


def _generated_flags(parser: argparse.ArgumentParser, flag: str, default: Path, help_: str) -> None:
    """``--params`` (the thresholds the dashboards show) and ``flag``, the directory of the generated JSON."""
    parser.add_argument(
        "--params",
        type=Path,
        default=DEFAULT_PARAMS_FILE,
        help="parameter file whose thresholds the dashboards show (default: mqttlb/params.yaml)",
    )
    parser.add_argument(flag, type=Path, default=default, help=help_)


def _query_flags(parser: argparse.ArgumentParser, prometheus_required: bool) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        default=build.GENERATED_DIR,
        help="directory of the dashboard JSON (default: the shipped dashboards)",
    )
    parser.add_argument(
        "--prometheus",
        type=_url,
        required=prometheus_required,
        metavar="URL",
        help="Prometheus base URL, e.g. http://127.0.0.1:9090; variables not given with --var are "
        "discovered there the way Grafana does (label_values)",
    )
    parser.add_argument(
        "--prometheus-user",
        metavar="USER",
        help="basic-auth user of that Prometheus (the local stack's: mqttlb), with --prometheus-password-file",
    )
    parser.add_argument(
        "--prometheus-password-file",
        type=Path,
        metavar="FILE",
        help="that user's password (the local stack's: .stack/secrets/web-password)",
    )
    parser.add_argument(
        "--var",
        type=_variable,
        action="append",
        default=[],
        metavar="NAME=VALUE[,VALUE...]",
        help="set a template variable (repeatable), e.g. --var cluster=local --var node=node1,node2",
    )
    parser.add_argument(
        "--range",
        dest="range_seconds",
        type=_duration,
        default=parse_duration("15m"),
        metavar="DURATION",
        help="time range ending now, e.g. 15m, 1h (default: 15m)",
    )
    parser.add_argument(
        "--scrape-interval",
        type=_duration,
        default=5.0,
        metavar="DURATION",
        help="Prometheus scrape interval, used for $__rate_interval as Grafana does (default: 5s)",
    )
    parser.add_argument(
        "--timeout", type=seconds_up_to(300), default=10.0,
        help="HTTP timeout per query in seconds, more than 0 and at most 300 (default: 10)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqttlb dashboards", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_log_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    _generated_flags(
        sub.add_parser("generate", help="write the dashboard JSON from the Python sources"),
        "--out",
        build.DEFAULT_OUT,
        "output directory (default: dashboards/generated under the current directory)",
    )
    _generated_flags(
        sub.add_parser("check", help="fail if the generated JSON differs from the sources"),
        "--dir",
        build.GENERATED_DIR,
        "directory of the generated JSON (default: the shipped dashboards)",
    )

    render = sub.add_parser("render", help="draw each dashboard to a PNG from a live Prometheus")
    _query_flags(render, prometheus_required=True)
    render.add_argument("--out", type=Path, required=True, help="directory for the PNG files (<uid>.png)")

    queries = sub.add_parser("queries", help="list every panel's queries with variables resolved")
    _query_flags(queries, prometheus_required=False)

    lint = sub.add_parser("lint", help="check dashboard JSON against grafana/dashboard-linter's rules")
    lint.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="dashboard JSON files (default: every *.json of the shipped dashboards)",
    )
    return parser


def _generate(args: argparse.Namespace) -> int:
    written = build.write_all(load_params(path=args.params), args.out)
    for path in written:
        log.info("wrote %s", path)
    log.info("%d dashboard file(s) changed in %s", len(written), args.out)
    return 0


def _check(args: argparse.Namespace) -> int:
    problems = build.drift(load_params(path=args.params), args.dir)
    if not problems:
        log.info("generated dashboards in %s match their sources", args.dir)
    params = f" --params {args.params}" if args.params != DEFAULT_PARAMS_FILE else ""
    return report(problems, f"mqttlb dashboards generate{params} --out {args.dir}")


def _prometheus(args: argparse.Namespace) -> PrometheusApi:
    """The --prometheus client, with the basic-auth login of --prometheus-user/--prometheus-password-file.
    Raises ValueError (SecretError) when the password file is unreadable or only one of the two is given."""
    if (args.prometheus_user is None) != (args.prometheus_password_file is None):
        raise ValueError("--prometheus-user and --prometheus-password-file go together")
    auth = None
    if args.prometheus_user is not None:
        login = BasicAuth(username=args.prometheus_user, password_file=args.prometheus_password_file)
        auth = ClientAuth(basic_auth=login)
    return PrometheusApi(args.prometheus, args.timeout, session=client_session(auth))


def _queries(args: argparse.Namespace) -> int:
    prom = _prometheus(args) if args.prometheus else None
    window = Window.last(args.range_seconds, args.scrape_interval)
    for _path, dashboard in load_dashboards(args.dir):
        _variables, panels = resolve_dashboard(dashboard, window, dict(args.var), prom)
        print(f"# {dashboard['uid']}: {dashboard.get('title', '')}")
        for panel in panels:
            for target in panel.targets:
                print(f"{panel.label}\t{target.ref_id}\t{target.expr}")
    return 0


def _render(args: argparse.Namespace) -> int:
    prom = _prometheus(args)
    window = Window.last(args.range_seconds, args.scrape_interval)
    failures = []
    for _path, dashboard in load_dashboards(args.dir):
        variables, panels = resolve_dashboard(dashboard, window, dict(args.var), prom)
        results = run_panels(prom, panels, window)
        from mqttlb.dashboards.render import annotation_times, render_png  # matplotlib only when drawing

        marks = annotation_times(
            run_annotations(prom, dashboard, variables, window), window.interval.step_seconds
        )
        shown = ", ".join(f"{v.name}={v.formatted()}" for v in variables.values() if v.name != "datasource")
        end = dt.datetime.fromtimestamp(window.end, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        out = render_png(
            dashboard.get("title", dashboard["uid"]),
            f"{shown}; last {int(args.range_seconds)}s until {end}; source {args.prometheus}",
            [p for p in panels if p.type == "row"],
            results,
            window,
            args.out / f"{dashboard['uid']}.png",
            marks,
        )
        log.info("rendered %s (%d panels)", out, len(results))
        failures += [f"{r.panel.label}: {'; '.join(r.errors)}" for r in results if r.errors]
    for failure in failures:
        print(f"query failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _lint(args: argparse.Namespace) -> int:
    paths = args.files or sorted(build.GENERATED_DIR.glob("*.json"))
    if not paths:
        raise ValueError(f"{build.GENERATED_DIR}: no dashboard JSON files (run `mqttlb dashboards generate`)")
    problems = [f"{path}: {problem}" for path in paths for problem in lint(load_dashboard(path))]
    for problem in problems:
        print(problem, file=sys.stderr)
    log.info("%d dashboard(s) linted, %d problem(s)", len(paths), len(problems))
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    handlers = {"generate": _generate, "check": _check, "queries": _queries, "render": _render, "lint": _lint}
    try:
        return handlers[args.command](args)
    except (ValueError, ResolveError, PrometheusApiError, OSError) as exc:
        return refuse(exc)


if __name__ == "__main__":
    raise SystemExit(main())

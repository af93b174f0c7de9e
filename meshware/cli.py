"""The ``meshware`` command: look at the mesh, resolve paths, run a local etcd.

Every command reads the same ``MESHWARE_*`` settings as the library (``--etcd`` and
``--prefix`` override them) and prints a table for people or, with ``--json``, JSON for scripts.
Exit status: 0 on success, 1 when a path does not resolve, 2 on bad usage or settings, 3 when
etcd cannot be reached.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from ._config import EtcdSettings
from ._core.table import Reset, RoutingTable
from ._core.traffic import TrafficState
from ._errors import ConfigError, MeshError, NoRouteError, RegistryUnavailable

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def _mesh_options(func: F) -> F:
    func = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)
    func = click.option(
        "--prefix", default=None, help="Key prefix (default: $MESHWARE_PREFIX or /meshware)."
    )(func)
    func = click.option(
        "--etcd",
        "etcd",
        default=None,
        help="etcd endpoints, comma-separated (default: $MESHWARE_ETCD_ENDPOINTS or http://127.0.0.1:2379).",
    )(func)
    return func


def _load_table(etcd: str | None, prefix: str | None) -> RoutingTable:
    return _load(etcd, prefix)[0]


def _load(etcd: str | None, prefix: str | None) -> tuple[RoutingTable, TrafficState]:
    """The table and the operator controls (weight overrides, edges), read once."""
    from .registry.etcd import EtcdRegistry

    args = {k: v for k, v in {"etcd_endpoints": etcd, "prefix": prefix}.items() if v is not None}
    try:
        settings = EtcdSettings.load(args)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    registry = EtcdRegistry.from_settings(settings)
    try:
        snapshot = registry.snapshot(settings.prefix + "/")
    except RegistryUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    finally:
        registry.close()
    traffic, rest = TrafficState.empty(settings.prefix).split(snapshot)
    if not isinstance(rest, Reset):  # pragma: no cover - a Reset always leaves a Reset
        rest = Reset((), snapshot.revision)
    table = RoutingTable.empty(settings.prefix).apply(rest)
    for problem in (*table.rejected.values(), *traffic.rejected.values()):
        click.echo(_printable(f"warning: skipping {problem}"), err=True)
    return table, traffic


def _printable(text: str) -> str:
    """``text`` as any terminal takes it: a lone surrogate from a record is shown escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _format_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> list[str]:
    rows = [[_printable(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return lines


def _print_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> None:
    for line in _format_table(rows, headers):
        click.echo(line)


@click.group()
@click.version_option(package_name="meshware")
def main() -> None:
    """Look at and work with a meshware service mesh."""


ROUTE_HEADERS = ("METHODS", "TEMPLATE", "SERVICE", "INSTANCES", "PUBLIC", "CONFLICT")


def _route_items(table: RoutingTable) -> list[dict[str, Any]]:
    lost: dict[tuple[str, str], list[str]] = {}
    for conflict in table.conflicts():
        for loser in conflict.losers:
            key = (loser.service, loser.template.text)
            if conflict.kind == "overlap":
                lost.setdefault(key, []).append(
                    f"{conflict.method} paths taken by {conflict.winner.service} "
                    f"{conflict.winner.template.text}"
                )
                if not conflict.winner.shadow:
                    key = (conflict.winner.service, conflict.winner.template.text)
                    lost.setdefault(key, []).append(
                        f"{conflict.method} takes paths of {loser.service} {loser.template.text}"
                    )
            else:
                lost.setdefault(key, []).append(
                    f"{conflict.method} lost to {conflict.winner.service}"
                )
    items: list[dict[str, Any]] = []
    for route, endpoints in table.routes():
        items.append(
            {
                "methods": sorted(route.methods),
                "template": route.template.text,
                "service": route.service,
                "instances": len(endpoints.serving),
                "draining": len(endpoints.all) - len(endpoints.serving),
                "public": route.spec.public,
                "kind": route.spec.kind,
                "name": route.spec.name,
                "conflicts": lost.get((route.service, route.template.text), []),
            }
        )
    return items


def _route_rows(items: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            ",".join(i["methods"]),
            i["template"],
            i["service"],
            str(i["instances"]) + (f" (+{i['draining']} draining)" if i["draining"] else ""),
            "yes" if i["public"] else "",
            "; ".join(i["conflicts"]),
        ]
        for i in items
    ]


@main.command()
@click.option(
    "--watch", is_flag=True, help="Keep running: redraw the table whenever the mesh changes."
)
@_mesh_options
def routes(etcd: str | None, prefix: str | None, as_json: bool, watch: bool) -> None:
    """Every route in the mesh: methods, template, service, instances, public, conflicts."""
    if watch:
        if as_json:
            raise click.UsageError("--watch draws a table for people; use --json without it")
        _watch_routes(etcd, prefix)
        return
    table = _load_table(etcd, prefix)
    items = _route_items(table)
    if as_json:
        click.echo(json.dumps({"revision": table.revision, "routes": items}, indent=2))
        return
    _print_table(_route_rows(items), ROUTE_HEADERS)
    if not items:
        click.echo("(no routes: is any service registered under this prefix?)", err=True)


#: Changes arriving within this many seconds are drawn together.
WATCH_SETTLE = 0.1
#: The header (etcd reachable or not, since when) is refreshed at least this often.
WATCH_REFRESH = 1.0


def _watch_routes(etcd: str | None, prefix: str | None) -> None:
    """A live view: the table redrawn on every change (a new block per change when piped)."""
    import time

    changed = threading.Event()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    view = _view(etcd, prefix)
    view._on_change = lambda _table: changed.set()
    tty = sys.stdout.isatty()
    drawn: tuple[RoutingTable, bool] | None = None
    try:
        while not stop.is_set():
            table = view.table
            state = (table, view.connected)  # a new table object on every change
            if state != drawn:
                lines = _watch_screen(view, table)
                if tty:
                    click.echo("\x1b[H\x1b[2J" + "\n".join(lines))
                else:
                    click.echo("\n".join(lines) + "\n")
                drawn = state
            if changed.wait(WATCH_REFRESH):
                changed.clear()
                time.sleep(WATCH_SETTLE)  # a burst of changes (a deploy): one redraw
    except KeyboardInterrupt:
        pass
    finally:
        view.stop()


def _watch_screen(view: Any, table: RoutingTable) -> list[str]:
    import time

    if view.connected:
        status = "etcd connected"
    elif view.unreachable_since is not None:
        since = time.strftime("%H:%M:%S", time.localtime(view.unreachable_since))
        status = f"etcd UNREACHABLE since {since}" + (
            ", showing the last-known table" if view.loaded else ", no table loaded yet"
        )
    else:
        status = "connecting to etcd"
    header = (
        f"meshware routes --watch   {table.prefix}   revision {table.revision}   "
        f"{time.strftime('%H:%M:%S')}   {status}   (Ctrl-C to stop)"
    )
    items = _route_items(table)
    body = _format_table(_route_rows(items), ROUTE_HEADERS)
    if not items:
        body.append("(no routes yet: is any service registered under this prefix?)")
    return [header, "", *body]


@main.command()
@click.argument("service", required=False)
@_mesh_options
def instances(service: str | None, etcd: str | None, prefix: str | None, as_json: bool) -> None:
    """The instances of SERVICE (or of every service)."""
    table = _load_table(etcd, prefix)
    found = table.instances(service)
    records = {r.instance_id: r for _, r in table.records()}
    items: list[dict[str, Any]] = [
        {
            "service": i.service,
            "url": i.url,
            "state": i.state,
            "records": list(i.records),
            "pids": [records[r].pid for r in i.records if r in records],
            "version": i.version,
            "zone": i.zone,
            "weight": i.weight,
            "routesets": [records[r].routeset for r in i.records if r in records],  # None: inline
        }
        for i in found
    ]
    if as_json:
        click.echo(json.dumps({"revision": table.revision, "instances": items}, indent=2))
        return
    if service is not None and not found:
        click.echo(f"no instances of {service!r}", err=True)
    rows = [
        [
            i["service"],
            i["url"],
            i["state"],
            str(len(i["records"])),
            i["version"] or "",
            i["zone"] or "",
        ]
        for i in items
    ]
    _print_table(rows, ["SERVICE", "URL", "STATE", "PROCESSES", "VERSION", "ZONE"])


#: Methods ``meshware resolve`` takes without looking at the table (others: if a route has them).
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
_RESOLVE_EXAMPLE = "e.g. meshware resolve GET /users/42"


def _resolve_usage(method: str, path: str | None) -> tuple[str, str]:
    """``(METHOD, PATH)`` from the arguments, or a usage error saying what is wrong."""
    if path is None:
        if method.startswith("/"):
            raise click.UsageError(
                f"the HTTP method is missing before the path: meshware resolve METHOD PATH "
                f"({_RESOLVE_EXAMPLE})"
            )
        raise click.UsageError(
            f"the path is missing: meshware resolve METHOD PATH ({_RESOLVE_EXAMPLE})"
        )
    if method.startswith("/") and not path.startswith("/"):
        raise click.UsageError(
            f"the method comes first: meshware resolve {path} {method} ({_RESOLVE_EXAMPLE})"
        )
    if not path.startswith("/"):
        raise click.UsageError(f"PATH must start with '/', not {path!r} ({_RESOLVE_EXAMPLE})")
    return method.upper(), path


def _check_method(method: str, table: RoutingTable) -> None:
    published = {m for route, _ in table.routes() for m in route.methods if m != "*"}
    if method in HTTP_METHODS or method in published:
        return
    raise click.UsageError(
        f"unknown HTTP method {method!r}: expected one of {', '.join(HTTP_METHODS)}"
        + (
            f" (or one a route publishes: {', '.join(sorted(published - set(HTTP_METHODS)))})"
            if published - set(HTTP_METHODS)
            else ""
        )
    )


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    """Converted parameters as JSON values: ints and floats stay numbers (as in Python)."""
    return {
        k: v if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
        for k, v in params.items()
    }


@main.command()
@click.argument("method", metavar="METHOD")
@click.argument("path", metavar="PATH", required=False)
@click.option("--host", default=None, help="Host header, for routes bound to a host.")
@_mesh_options
def resolve(
    method: str,
    path: str | None,
    host: str | None,
    etcd: str | None,
    prefix: str | None,
    as_json: bool,
) -> None:
    """Which service, route and instances would serve METHOD PATH (e.g. GET /users/42)."""
    method, path = _resolve_usage(method, path)
    table = _load_table(etcd, prefix)
    _check_method(method, table)
    try:
        found = table.resolve(method, path, host=host)
    except NoRouteError as exc:
        if as_json:
            click.echo(json.dumps({"error": str(exc), "allowed": list(exc.allowed)}))
        else:
            click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    item: dict[str, Any] = {
        "service": found.service,
        "template": found.route.template.text,
        "name": found.route.spec.name,
        "params": _json_params(found.params),
        "instances": [i.url for i in found.instances],
        "public": found.route.spec.public,
    }
    if as_json:
        click.echo(json.dumps(item, indent=2))
        return
    click.echo(_printable(f"service:   {item['service']}"))
    click.echo(
        _printable(
            f"route:     {item['template']}" + (f"  ({item['name']})" if item["name"] else "")
        )
    )
    click.echo(_printable(f"params:    {json.dumps(item['params'])}"))
    click.echo(_printable(f"instances: {', '.join(item['instances']) or '(none serving)'}"))


@main.command()
@click.option("--port", default=2379, show_default=True, help="Client port on 127.0.0.1.")
@click.option("--data-dir", default=None, help="Keep etcd's data here (default: a temporary dir).")
@click.option(
    "--cluster",
    "size",
    default=1,
    type=click.IntRange(1, 7),
    help="Run a cluster of this many members (free loopback ports) instead of one etcd.",
)
def dev(port: int, data_dir: str | None, size: int) -> None:
    """Run a local etcd for development, until Ctrl-C."""
    from .testing.etcd import EtcdServer

    if size > 1:
        _dev_cluster(size, data_dir)
        return

    another = f"pick another with --port, e.g. meshware dev --port {port + 1}"
    if not _port_free(port):
        click.echo(
            f"error: port {port} on 127.0.0.1 is already in use (an etcd, or an earlier "
            f"`meshware dev`, may be running there): {another}",
            err=True,
        )
        sys.exit(3)
    server = EtcdServer(data_dir, client_port=port, name="meshware-dev")
    try:
        server.start()
    except (OSError, RuntimeError, MeshError) as exc:
        text = str(exc) or type(exc).__name__
        if "could not bind" in text:  # a race with another process: no need for etcd's log
            text = f"{text.splitlines()[0]}; {another}"
        click.echo(f"error: could not start etcd: {text}", err=True)
        sys.exit(3)
    click.echo(
        f"etcd {server.endpoint} (pid {server.pid}); export MESHWARE_ETCD_ENDPOINTS={server.endpoint}"
    )
    click.echo("Ctrl-C to stop.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _dev_cluster(size: int, data_dir: str | None) -> None:
    from .testing.etcd import EtcdCluster

    if data_dir is not None:
        raise click.UsageError("--cluster keeps its data in temporary directories (no --data-dir)")
    cluster = EtcdCluster(size)
    try:
        cluster.start()
    except (OSError, RuntimeError, MeshError) as exc:
        click.echo(f"error: could not start the etcd cluster: {exc}", err=True)
        sys.exit(3)
    for member in cluster.members:
        click.echo(f"etcd member {member.name}: {member.endpoint} (pid {member.pid})")
    click.echo(f"export MESHWARE_ETCD_ENDPOINTS={cluster.endpoint}")
    click.echo("Ctrl-C to stop.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


def _port_free(port: int) -> bool:
    """Whether etcd could bind 127.0.0.1:``port`` (it sets SO_REUSEADDR, as this check does)."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@main.command()
@click.argument("app", required=False, metavar="[MODULE:APP]")
@click.option(
    "--app-dir", default=".", show_default=True, help="Import MODULE from this directory."
)
@click.option("--all", "show_all", is_flag=True, help="List every route (default: the first 12).")
@_mesh_options
def doctor(
    app: str | None,
    app_dir: str,
    show_all: bool,
    etcd: str | None,
    prefix: str | None,
    as_json: bool,
) -> None:
    """Check etcd, and an app (MODULE:APP, as gunicorn and uvicorn take it): what to fix.

    Says whether etcd answers (and its version), which routes the app publishes and which it
    leaves out and why, conflicts with the live mesh, and which URL it would advertise. The app
    is imported but never registered. Exit status 1 when something needs fixing.
    """
    from ._doctor import diagnose

    try:
        checks = diagnose(app, etcd=etcd, prefix=prefix, app_dir=app_dir)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    problems = [p for c in checks for p in c.problems]
    if as_json:
        out = [
            {"check": c.title, "ok": c.ok, "facts": c.facts, "problems": c.problems} for c in checks
        ]
        click.echo(json.dumps({"ok": not problems, "checks": out}, indent=2))
        sys.exit(1 if problems else 0)
    width = max(len(c.title) for c in checks)
    limit = None if show_all else 12
    for c in checks:
        facts = c.facts
        if limit is not None and len(facts) > limit:
            facts = [*facts[:limit], f"... and {len(facts) - limit} more (--all lists them)"]
        mark = click.style(" ok ", fg="green") if c.ok else click.style("FIX ", fg="red")
        lines = facts or [f"{len(c.problems)} to fix, below"]
        for i, line in enumerate(lines):
            head = f"{mark} {c.title.ljust(width)}" if i == 0 else " " * (5 + width)
            click.echo(f"{head}  {line}".rstrip())
    if problems:
        click.echo("\nTo fix:")
        for n, problem in enumerate(problems, 1):
            click.echo(f"  {n}. {problem}")
        sys.exit(1)
    click.echo("\nNothing to fix.")


def _rewrites(values: Sequence[str]) -> tuple[Any, ...]:
    from .edge.public import Rewrite

    try:
        return tuple(Rewrite.parse(v) for v in values)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _view(etcd: str | None, prefix: str | None) -> Any:
    from . import connect

    try:
        return connect(etcd_endpoints=etcd, prefix=prefix)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@main.group()
def edge() -> None:
    """Expose the mesh's public routes to the outside."""


@edge.command("nginx")
@click.option(
    "--out",
    "out",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write here (default: print).",
)
@click.option(
    "--watch", is_flag=True, help="Keep running: re-render on changes, replace --out, reload nginx."
)
@click.option(
    "--listen", default="127.0.0.1:8080", show_default=True, help="nginx's listen address."
)
@click.option(
    "--rewrite",
    "rewrite",
    multiple=True,
    metavar="SERVICE:PUBLIC=INTERNAL",
    help="Expose a service's prefix under another (repeatable).",
)
@click.option(
    "--scope",
    type=click.Choice(["public", "node"]),
    default="public",
    show_default=True,
    help="public: the public routes (an edge); node: every route, on a loopback listener, "
    "for local callers that are not Python.",
)
@click.option(
    "--include",
    "include_only",
    is_flag=True,
    help="Render only upstream/server blocks, for your own http {} block.",
)
@click.option(
    "--nginx-prefix",
    default="",
    help="Directory for nginx's pid, logs and temp files (standalone config).",
)
@click.option("--client-max-body-size", default="1m", show_default=True)
@click.option("--connect-timeout", default=2.0, show_default=True, type=float)
@click.option("--read-timeout", default=30.0, show_default=True, type=float)
@click.option(
    "--nginx", "nginx_bin", default=None, help="nginx binary (default: $NGINX_BIN, PATH)."
)
@click.option(
    "--check/--no-check", default=True, show_default=True, help="Validate with nginx -t before use."
)
@click.option(
    "--reload-cmd",
    default=None,
    help="Command that reloads nginx (default: nginx -s reload with the same prefix and config).",
)
@click.option(
    "--debounce",
    default=0.5,
    show_default=True,
    type=float,
    help="Seconds to let changes settle (--watch).",
)
@click.option(
    "--edges",
    type=click.IntRange(1, 1024),
    default=None,
    help="Edges sharing each route's rate limit, this one enforcing 1/N (default: the edges "
    "registered in etcd, at least 1; with --watch it registers and counts itself).",
)
@click.option("--prefix", default=None, help="Key prefix (default: $MESHWARE_PREFIX or /meshware).")
@click.option(
    "--etcd", "etcd", default=None, help="etcd endpoints (default: $MESHWARE_ETCD_ENDPOINTS)."
)
def edge_nginx(
    out: str | None,
    watch: bool,
    listen: str,
    rewrite: Sequence[str],
    scope: str,
    include_only: bool,
    nginx_prefix: str,
    client_max_body_size: str,
    connect_timeout: float,
    read_timeout: float,
    nginx_bin: str | None,
    check: bool,
    reload_cmd: str | None,
    debounce: float,
    edges: int | None,
    prefix: str | None,
    etcd: str | None,
) -> None:
    """Render an nginx configuration from the table (validated with nginx -t).

    --scope public (the default) exposes the public routes only; --scope node routes every route
    of the mesh for local callers, with the client's retries, ejection and timeouts.
    """
    import shlex
    import subprocess
    from pathlib import Path

    from .edge.nginx import (
        NginxOptions,
        Watcher,
        find_nginx,
        host_resolves,
        render,
        render_checked,
        validate,
    )

    try:
        options = NginxOptions(
            listen=listen,
            client_max_body_size=client_max_body_size,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            rewrites=_rewrites(rewrite),
            scope=scope,
            standalone=not include_only,
            prefix=str(Path(nginx_prefix).resolve()) if nginx_prefix else "",
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None

    if options.prefix:
        Path(options.prefix).mkdir(parents=True, exist_ok=True)  # nginx's pid, logs, temp files

    def checked(text: str) -> None:
        if check:
            validate(text, nginx=nginx_bin, standalone=options.standalone)

    if not watch:
        table, traffic = _load(etcd, prefix)
        weight_of, n = traffic.weight_of, edges or traffic.edges
        try:  # a record nginx refuses is left out (a warning names it), the rest goes on
            if check:
                text = render_checked(
                    table, options, checked, host_ok=host_resolves, weight_of=weight_of, edges=n
                )
            else:
                text = render(table, options, host_ok=host_resolves, weight_of=weight_of, edges=n)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        if out is None:
            click.echo(text, nl=False)
        else:
            from .edge.nginx import write_if_changed

            changed = write_if_changed(Path(out), text)
            click.echo(f"{out}: {'written' if changed else 'unchanged'}", err=True)
        return
    if out is None:
        raise click.UsageError("--watch needs --out FILE (the configuration nginx reads)")
    if edges is not None:
        raise click.UsageError("--edges is for one-shot renders: --watch counts the live edges")
    target = Path(out).resolve()
    if reload_cmd:
        command = shlex.split(reload_cmd)
    else:
        command = [find_nginx(nginx_bin), "-s", "reload", "-c", str(target)]
        if options.prefix:
            command += ["-p", options.prefix]

    def reload() -> None:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise ConfigError(
                f"reloading nginx failed: {result.stderr.strip()}", setting="reload-cmd"
            )
        click.echo(f"{target}: changed, nginx reloaded", err=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    view = _view(etcd, prefix)
    watcher = Watcher(
        target, options, reload, debounce=debounce, check=checked, traffic=lambda: view.traffic
    )
    watcher.host_ok = host_resolves
    view._on_change = watcher.changed
    from .edge.presence import EdgePresence

    presence = EdgePresence(view.registry, view.prefix, "nginx").start()  # edges share rates
    watcher.changed(view.table)
    try:
        watcher.run(
            stop,
            lambda exc: click.echo(f"error: {exc}; keeping the last good configuration", err=True),
        )
    except KeyboardInterrupt:
        pass
    finally:
        presence.stop()
        view.stop()


@main.command()
@click.option(
    "--listen", default="127.0.0.1:8480", show_default=True, help="HOST:PORT to serve on."
)
@click.option("--public-only", is_flag=True, help="Expose only public routes (an edge of its own).")
@click.option(
    "--rewrite",
    "rewrite",
    multiple=True,
    metavar="SERVICE:PUBLIC=INTERNAL",
    help="With --public-only: expose a service's prefix under another.",
)
@click.option(
    "--total-timeout",
    default=30.0,
    show_default=True,
    type=float,
    help="Per request, retries included.",
)
@click.option(
    "--max-connections",
    default=1024,
    show_default=True,
    type=click.IntRange(1),
    help="Connections held at once; more get 503 (lowered to fit the descriptor limit).",
)
@click.option(
    "--max-body-size",
    default=8 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(0),
    help="Bytes a request body may have; larger ones get 413.",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds for a request's line and headers to arrive; then 408.",
)
@click.option("--prefix", default=None, help="Key prefix (default: $MESHWARE_PREFIX or /meshware).")
@click.option(
    "--etcd", "etcd", default=None, help="etcd endpoints (default: $MESHWARE_ETCD_ENDPOINTS)."
)
def proxy(
    listen: str,
    public_only: bool,
    rewrite: Sequence[str],
    total_timeout: float,
    max_connections: int,
    max_body_size: int,
    header_timeout: float,
    prefix: str | None,
    etcd: str | None,
) -> None:
    """A local router: http://HOST:PORT/<path> reaches whoever serves <path> in the mesh."""
    try:
        import uvicorn
    except ImportError:
        raise click.UsageError(
            "meshware proxy needs uvicorn: pip install 'meshware[proxy]'"
        ) from None
    from . import AsyncClient
    from .edge.proxy import MeshProxy
    from .edge.serve import ProxyLimits, uvicorn_config

    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.UsageError(f"--listen must be HOST:PORT, not {listen!r}")
    view = _view(etcd, prefix)
    client = AsyncClient(view, total_timeout=total_timeout, timeout=total_timeout)
    limits = ProxyLimits(
        max_connections=max_connections,
        header_timeout=header_timeout,
    )
    app = MeshProxy(
        client,
        view,
        public_only=public_only,
        rewrites=_rewrites(rewrite),
        max_body=max_body_size,
    )
    presence = None
    if public_only:  # an edge: it shares the routes' rate limits with the other edges
        from .edge.presence import EdgePresence

        presence = EdgePresence(view.registry, view.prefix, "proxy").start()
    click.echo(
        f"meshware proxy on http://{listen}/ ({'public routes only' if public_only else 'every route'})",
        err=True,
    )
    try:
        uvicorn.Server(uvicorn_config(app, host.strip("[]"), int(port), limits)).run()
    finally:
        if presence is not None:
            presence.stop()
        view.stop()


@main.command()
@click.argument("service", required=False)
@click.argument("weight", required=False, type=int)
@click.option("--instance", default=None, help="Only this instance (its id, as `instances` shows).")
@click.option("--version", "version", default=None, help="Only the instances of this version.")
@click.option("--clear", is_flag=True, help="Remove overrides (of SERVICE, or all of them).")
@_mesh_options
def weight(
    service: str | None,
    weight: int | None,
    instance: str | None,
    version: str | None,
    clear: bool,
    etcd: str | None,
    prefix: str | None,
    as_json: bool,
) -> None:
    """Override balancing weights without redeploying (0-10000; 0: no new requests).

    \b
    meshware weight users 0 --instance web-1-4242-9f1c2ab0   drain one instance
    meshware weight users 5 --version v2                     a canary (v1 keeps its 100)
    meshware weight users --clear                            back to the published weights
    meshware weight --clear                                  every override removed
    meshware weight                                          list the overrides

    Every client and edge sees a change within a second (they watch etcd).
    """
    from ._core.records import validate_service_name
    from ._core.traffic import describe, weight_override_key, weights_prefix
    from .registry.etcd import EtcdRegistry

    if instance is not None and version is not None:
        raise click.UsageError("give --instance or --version, not both")
    for name, value in (("--instance", instance), ("--version", version)):
        if value is not None and (not value or "/" in value or len(value) > 200):
            raise click.UsageError(f"{name} must be 1-200 characters without '/', not {value!r}")
    if service is not None:
        try:
            validate_service_name(service, setting="SERVICE")
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
    if clear and weight is not None:
        raise click.UsageError("--clear takes no WEIGHT")
    if not clear and service is not None and weight is None:
        raise click.UsageError("give a WEIGHT (0-10000) or --clear")
    if weight is not None and not 0 <= weight <= 10_000:
        raise click.UsageError(f"WEIGHT must be a whole number 0-10000, not {weight}")
    if service is None and (instance or version):
        raise click.UsageError("--instance and --version need a SERVICE")
    args = {k: v for k, v in {"etcd_endpoints": etcd, "prefix": prefix}.items() if v is not None}
    try:
        settings = EtcdSettings.load(args)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if service is None and not clear:
        _table, traffic = _load(etcd, prefix)
        rows = describe(traffic)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        elif not rows:
            click.echo("no weight overrides: every instance has the weight it publishes")
        else:
            _print_table(
                [[r["service"], r["scope"], r["name"] or "*", str(r["weight"])] for r in rows],
                ["SERVICE", "SCOPE", "NAME", "WEIGHT"],
            )
        return
    registry = EtcdRegistry.from_settings(settings)
    try:
        if clear:
            if service is not None and (instance or version):
                keys = [
                    weight_override_key(
                        settings.prefix, service, instance=instance, version=version
                    )
                ]
            else:
                base = weights_prefix(settings.prefix) + (service or "")
                keys = [
                    e.key
                    for e in registry.snapshot(base).entries
                    if service is None or e.key == base or e.key.startswith(base + "/")
                ]
            for key in keys:
                registry.delete(key)
            click.echo(f"removed {len(keys)} weight override(s)")
            return
        if service is None or weight is None:  # pragma: no cover - checked above
            raise click.UsageError("give SERVICE and WEIGHT")
        key = weight_override_key(settings.prefix, service, instance=instance, version=version)
        registry.put(key, json.dumps({"weight": weight}).encode())
        what = (
            f"instance {instance}"
            if instance
            else f"version {version}"
            if version
            else "every instance"
        )
        click.echo(f"{service}: weight {weight} for {what} ({key})")
    except RegistryUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    finally:
        registry.close()


@main.group("etcd")
def etcd_group() -> None:
    """Set up etcd for a mesh where services cannot overwrite each other (RBAC)."""


def _admin_client(etcd: str | None, prefix: str | None) -> tuple[Any, str]:
    from .registry.etcd import EtcdRegistry

    args = {k: v for k, v in {"etcd_endpoints": etcd, "prefix": prefix}.items() if v is not None}
    try:
        settings = EtcdSettings.load(args)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    return EtcdRegistry.from_settings(settings).client, settings.prefix


def _etcd_options(func: F) -> F:
    func = click.option("--prefix", default=None, help="Key prefix (default: $MESHWARE_PREFIX).")(
        func
    )
    return click.option("--etcd", "etcd", default=None, help="etcd endpoints, comma-separated.")(
        func
    )


@etcd_group.command("setup-auth")
@click.option("--root-password", required=True, help="Password of etcd's root user (created).")
@click.option("--reader-password", default=None, help="Password of meshware-reader (generated).")
@_etcd_options
def etcd_setup_auth(
    etcd: str | None, prefix: str | None, root_password: str, reader_password: str | None
) -> None:
    """Create root and the reader role/user (reads the whole prefix), then enable auth."""
    from .registry.rbac import setup_auth

    client, prefix_ = _admin_client(etcd, prefix)
    try:
        created = setup_auth(
            client, prefix_, root_password=root_password, reader_password=reader_password
        )
    except MeshError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3 if isinstance(exc, RegistryUnavailable) else 1)
    finally:
        client.close()
    click.echo(f"authentication enabled; readers of {prefix_}/ log in as meshware-reader")
    if created and not reader_password:
        click.echo(f"meshware-reader password: {created}")


@etcd_group.command("grant")
@click.argument("service")
@click.option("--user", default=None, help="etcd user for the service (default: its name).")
@click.option("--password", default=None, help="Its password (default: generated, printed).")
@_etcd_options
def etcd_grant(
    service: str, etcd: str | None, prefix: str | None, user: str | None, password: str | None
) -> None:
    """Let SERVICE write only its own keys (instances, route sets) and read the mesh.

    Run it as etcd's root (MESHWARE_ETCD_USERNAME / MESHWARE_ETCD_PASSWORD); then give the
    service's processes the printed user and password.
    """
    from .registry.rbac import grant_service

    client, prefix_ = _admin_client(etcd, prefix)
    try:
        grant = grant_service(client, prefix_, service, user=user, password=password)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except MeshError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3 if isinstance(exc, RegistryUnavailable) else 1)
    finally:
        client.close()
    click.echo(f"role {grant.role}: read {grant.read}, write " + ", ".join(grant.write))
    click.echo(f"user {grant.user} holds it")
    if grant.password is not None and not password:
        click.echo(f"password: {grant.password}")
    elif grant.password is None:
        click.echo("(the user existed already: its password is unchanged)")


if __name__ == "__main__":
    main()

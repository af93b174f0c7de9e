"""A record nginx cannot take costs only itself: the rest of the mesh still reaches nginx.

Checked with the real ``nginx -t`` (skipped without nginx) and the real watcher.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import meshware
import meshware.edge.nginx as nginx_module
from meshware import InstanceRecord, RouteSpec, RoutingTable
from meshware.edge.nginx import (
    NginxOptions,
    Watcher,
    culprit,
    find_nginx,
    host_resolves,
    render,
    render_checked,
    validate,
)

GOOD = InstanceRecord(
    "users", "u1", "http://127.0.0.1:8001", (RouteSpec("/users/{id:int}", ("GET",), public=True),)
)
LONG = "/long/" + "/".join(f"{{a{i}:uuid}}" for i in range(60))  # < 2 KB; its regex > 4 KB


def bad_records() -> dict[str, InstanceRecord]:
    return {
        "unresolvable host": InstanceRecord(
            "ghost",
            "g1",
            "http://no-such-host.invalid:8000",
            (RouteSpec("/ghost", ("GET",), public=True),),
        ),
        "semicolon": InstanceRecord(
            "semi", "s1", "http://127.0.0.1:8002", (RouteSpec("/a;b", ("GET",), public=True),)
        ),
        "long template": InstanceRecord(
            "long", "l1", "http://127.0.0.1:8003", (RouteSpec(LONG, ("GET",), public=True),)
        ),
        "lone surrogate": InstanceRecord(
            "sur",
            "s1",
            "http://127.0.0.1:8004",
            (RouteSpec("/x\ud800", ("GET",), public=True),),
        ),
        "quotes, hash, backslash": InstanceRecord(
            "quote",
            "q1",
            "http://127.0.0.1:8005",
            (RouteSpec('/q"#x\\', ("GET",), public=True),),
        ),
    }


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    nginx_module._warned.clear()  # each test sees its own warnings


@pytest.fixture(scope="module")
def nginx() -> str:
    try:
        return find_nginx()
    except meshware.ConfigError as exc:
        pytest.skip(str(exc))


def check(text: str) -> None:
    validate(text, standalone=True)


@pytest.mark.parametrize("case", list(bad_records()))
def test_one_bad_record_leaves_out_only_itself(
    nginx: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad = bad_records()[case]
    table = RoutingTable.from_records([GOOD, bad])
    caplog.set_level(logging.WARNING, "meshware.edge")
    text = render_checked(table, NginxOptions(prefix="/tmp"), check, host_ok=host_resolves)
    assert '"^/users/([0-9]+)$"' in text  # the rest goes on
    kept = {"semicolon": 'location = "/a;b"', "quotes, hash, backslash": r'location = "/q\"#x\\"'}
    if case in kept:  # expressible once quoted: kept, and nginx -t took it
        assert kept[case] in text
        return
    assert f"mesh_{bad.service}" not in text
    if case == "lone surrogate":  # the table refuses the record already (issue 12)
        assert table.rejected
        return
    named = [r.getMessage() for r in caplog.records if bad.url in r.getMessage()]
    named += [r.getMessage() for r in caplog.records if f"{bad.service}'s" in r.getMessage()]
    assert len(named) == 1, caplog.text  # one warning, naming the record


def test_all_bad_records_together_leave_the_good_one(nginx: str) -> None:
    table = RoutingTable.from_records([GOOD, *bad_records().values()])
    text = render_checked(table, NginxOptions(prefix="/tmp"), check, host_ok=host_resolves)
    validate(text)
    assert '"^/users/([0-9]+)$"' in text


def test_an_unresolvable_host_is_found_from_nginx_own_words(nginx: str) -> None:
    # no resolver given: nginx -t names the line, and the instance on it is left out
    table = RoutingTable.from_records([GOOD, bad_records()["unresolvable host"]])
    with pytest.raises(meshware.ConfigError, match="host not found"):
        check(render(table, NginxOptions(prefix="/tmp")))
    text = render_checked(table, NginxOptions(prefix="/tmp"), check)
    assert "no-such-host.invalid" not in text
    assert '"^/users/([0-9]+)$"' in text


def test_culprit_names_the_route_or_instance_on_the_line() -> None:
    text = render(RoutingTable.from_records([GOOD]), NginxOptions())
    lines = text.split("\n")
    server = next(i for i, line in enumerate(lines) if line.strip().startswith("server 127"))
    proxy = next(i for i, line in enumerate(lines) if "proxy_pass http://mesh_users" in line)
    assert culprit(text, f"x in /t/nginx.conf:{server + 1}") == "127.0.0.1:8001"
    assert culprit(text, f"x in /t/nginx.conf:{proxy + 1}") == "route users /users/{id:int} GET"
    assert culprit(text, "x in /t/nginx.conf:1") is None  # not a record's: the error stands
    assert culprit(text, "no line") is None


def test_a_problem_that_is_no_records_still_raises(nginx: str) -> None:
    table = RoutingTable.from_records([GOOD])
    with pytest.raises(meshware.ConfigError):
        render_checked(
            table, NginxOptions(prefix="/tmp", client_max_body_size="1m"), _refuse_everything
        )


def _refuse_everything(text: str) -> None:
    raise meshware.ConfigError("nginx: [emerg] unknown directive in /x/nginx.conf:3", setting="x")


def test_the_watcher_keeps_installing_the_rest(nginx: str, tmp_path: Path) -> None:
    reloads: list[str] = []
    out = tmp_path / "mesh.conf"
    watcher = Watcher(
        out, NginxOptions(prefix=str(tmp_path)), lambda: reloads.append("r"), check=check
    )
    watcher.host_ok = host_resolves
    assert watcher.apply(RoutingTable.from_records([GOOD, *bad_records().values()]))
    newcomer = InstanceRecord(
        "orders",
        "o1",
        "http://127.0.0.1:8009",
        (RouteSpec("/orders/{id:int}", ("GET",), public=True),),
    )
    assert watcher.apply(RoutingTable.from_records([GOOD, newcomer, *bad_records().values()]))
    assert "/orders/" in out.read_text()
    assert reloads == ["r", "r"]

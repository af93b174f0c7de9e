"""What is public, what is refused, and how the nginx configuration is kept current (no nginx needed
except where marked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshware import ConfigError, InstanceRecord, RouteSpec, RoutingTable
from meshware.edge.nginx import NginxOptions, Watcher, render
from meshware.edge.public import Rewrite, public_routes, refuse_target


def record(
    service: str, url: str, routes: tuple[RouteSpec, ...], *, state: str = "serving"
) -> InstanceRecord:
    return InstanceRecord(service, "i1", url, routes, state=state)  # type: ignore[arg-type]


def table(*routes: RouteSpec, state: str = "serving") -> RoutingTable:
    return RoutingTable.from_records(
        [record("users", "http://127.0.0.1:8001", routes, state=state)]
    )


PUBLIC = RouteSpec("/users/{id:int}", ("GET",), public=True)
PRIVATE = RouteSpec("/admin", ("GET",))


def test_only_public_routes_of_serving_instances_are_exposed() -> None:
    assert [r.public.text for r in public_routes(table(PUBLIC, PRIVATE))] == ["/users/{id:int}"]
    assert public_routes(table(PUBLIC, state="draining")) == []


def test_a_route_lost_in_a_conflict_is_not_exposed() -> None:
    users = record("users", "http://127.0.0.1:8001", (PUBLIC,))
    t = RoutingTable.from_records([users, record("other", "http://127.0.0.1:9", (PUBLIC,))])
    assert [r.service for r in public_routes(t)] == ["users"]


def test_static_routes_come_before_templates() -> None:
    t = table(PUBLIC, RouteSpec("/users/me", ("GET",), public=True))
    assert [r.public.text for r in public_routes(t)] == ["/users/me", "/users/{id:int}"]


def test_a_rewrite_exposes_a_prefix_under_another() -> None:
    rw = Rewrite.parse("users:/u=/user-service/users")
    t = table(RouteSpec("/user-service/users/{id:int}", ("GET",), public=True))
    (route,) = public_routes(t, (rw,))
    assert route.public.text == "/u/{id:int}"
    assert route.internal_path("/u/7") == "/user-service/users/7"


@pytest.mark.parametrize(
    "text", ["users", "users:/u", "Users:/u=/x", "users:u=/x", "users:/u/=/x", "users:/{x}=/y"]
)
def test_bad_rewrites_say_what_is_expected(text: str) -> None:
    with pytest.raises(ConfigError, match=r"SERVICE:PUBLIC=INTERNAL|path prefix"):
        Rewrite.parse(text)


@pytest.mark.parametrize(
    "target",
    [
        "http://x/admin",
        "*",
        "/a/../b",
        "/a/./b",
        "/a//b",
        "/%2e%2e/x",
        "/a%2Fb",
        "/a%5cb",
        "/a\\b",
        "/a%00",
        "/a b",
    ],
)
def test_hostile_targets_are_refused(target: str) -> None:
    assert refuse_target(target) is not None


@pytest.mark.parametrize(
    "target", ["/", "/users/1", "/users/1?next=/../x", "/a%20b", "/files/a.b..c"]
)
def test_ordinary_targets_pass(target: str) -> None:
    assert refuse_target(target) is None


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="listen"):
        NginxOptions(listen="8080")
    with pytest.raises(ConfigError, match="client_max_body_size"):
        NginxOptions(client_max_body_size="1 GB")


def test_the_rendering_is_stable_and_lists_every_public_route() -> None:
    text = render(table(PUBLIC, PRIVATE))
    assert text == render(table(PUBLIC, PRIVATE))
    assert '"^/users/([0-9]+)$"' in text
    assert "/admin" not in text
    assert "server 127.0.0.1:8001" in text


class Reloads:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def test_the_watcher_writes_and_reloads_only_when_the_configuration_changes(tmp_path: Path) -> None:
    out = tmp_path / "mesh.conf"
    reloads = Reloads()
    watcher = Watcher(out, NginxOptions(), reloads)
    assert watcher.apply(table(PUBLIC)) is True
    assert watcher.apply(table(PUBLIC, PRIVATE)) is False  # a private route changes nothing
    assert reloads.count == 1
    assert watcher.apply(table(PUBLIC, RouteSpec("/users", ("POST",), public=True))) is True
    assert reloads.count == 2
    assert 'location = "/users"' in out.read_text()


def test_a_rejected_configuration_is_never_installed(tmp_path: Path) -> None:
    out = tmp_path / "mesh.conf"
    reloads = Reloads()
    good = Watcher(out, NginxOptions(), reloads)
    good.apply(table(PUBLIC))
    before = out.read_text()

    def reject(text: str) -> None:
        raise ConfigError("nginx -t rejected the rendered configuration: boom")

    bad = Watcher(out, NginxOptions(), reloads, check=reject)
    with pytest.raises(ConfigError):
        bad.apply(table(PUBLIC, RouteSpec("/users", ("POST",), public=True)))
    assert out.read_text() == before
    assert reloads.count == 1
    assert [p.name for p in tmp_path.iterdir()] == ["mesh.conf"]  # no temporary file left


def test_upstream_names_of_different_services_never_collide() -> None:
    t = RoutingTable.from_records(
        record(name, f"http://127.0.0.1:{8001 + k}", (RouteSpec(f"/{k}", ("GET",), public=True),))
        for k, name in enumerate(("a-b", "a.b", "a_b"))
    )
    text = render(t)
    names = [line.split()[1] for line in text.splitlines() if line.strip().startswith("upstream ")]
    assert len(names) == len(set(names)) == 3


def test_a_route_only_some_instances_declare_goes_only_to_them() -> None:
    old = record("users", "http://127.0.0.1:8001", (PUBLIC,))
    new_routes = (PUBLIC, RouteSpec("/users/{id:int}/avatar", ("GET",), public=True))
    new = InstanceRecord("users", "i2", "http://127.0.0.1:8002", new_routes)
    t = RoutingTable.from_records([old, new])
    text = render(t)
    avatar = text[text.index("/avatar") :]
    upstream = avatar.split("proxy_pass http://", 1)[1].split(";", 1)[0]
    block = text[text.index(f"upstream {upstream} {{") :].split("}", 1)[0]
    assert "127.0.0.1:8002" in block
    assert "127.0.0.1:8001" not in block


def test_a_failed_reload_is_tried_again_with_the_same_configuration(tmp_path: Path) -> None:
    out = tmp_path / "mesh.conf"
    outcomes = [ConfigError("reload failed"), None]

    def reload() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    watcher = Watcher(out, NginxOptions(), reload)
    with pytest.raises(ConfigError):
        watcher.apply(table(PUBLIC))
    assert watcher.apply(table(PUBLIC)) is True  # not "unchanged": nginx never took it
    assert outcomes == []


def test_a_fragment_in_the_target_is_refused() -> None:
    assert refuse_target("/users/ada#/avatar") is not None

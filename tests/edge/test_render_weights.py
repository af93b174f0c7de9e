"""Weights in the rendered nginx upstreams (checked by a real ``nginx -t`` when installed)."""

from __future__ import annotations

import pytest

from meshware import ConfigError, InstanceRecord, RouteSpec, RoutingTable
from meshware.edge.nginx import find_nginx, render, validate


def have_nginx() -> bool:
    try:
        find_nginx()
    except ConfigError:
        return False
    return True


PUBLIC = RouteSpec("/users/{id:int}", ("GET",), public=True)


def fleet(*weights: int) -> RoutingTable:
    return RoutingTable.from_records(
        [
            InstanceRecord("users", f"i{k}", f"http://127.0.0.1:{8001 + k}", (PUBLIC,), weight=w)
            for k, w in enumerate(weights)
        ]
    )


def servers(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("server 127")]


def test_unequal_weights_are_rendered_and_weight_zero_is_down() -> None:
    text = render(fleet(100, 300, 0))
    assert servers(text) == [
        "server 127.0.0.1:8001 weight=100 max_fails=0;",
        "server 127.0.0.1:8002 weight=300 max_fails=0;",
        "server 127.0.0.1:8003 down max_fails=0;",
    ]
    if have_nginx():
        validate(text)


def test_equal_weights_render_no_weight_and_all_zero_is_not_an_outage() -> None:
    assert all("weight" not in s and "down" not in s for s in servers(render(fleet(300, 300))))
    assert all("down" not in s for s in servers(render(fleet(0, 0))))


def test_an_operator_override_is_what_the_edge_renders() -> None:
    text = render(fleet(100, 100), weight_of=lambda i: 0 if i.url.endswith(":8001") else i.weight)
    assert servers(text)[0] == "server 127.0.0.1:8001 down max_fails=0;"


@pytest.mark.parametrize("weight", [1, 10_000])
def test_the_weight_bounds_of_the_record_are_valid_nginx(weight: int) -> None:
    if not have_nginx():
        pytest.skip("nginx is not installed")
    validate(render(fleet(weight, 5000)))

"""A MeshView in its own process for bench_registry.py: stdin asks, stdout answers.

Each request line is JSON ``{"service", "url", "state", "weight", "since"}`` (``state`` null:
the instance is gone); the answer is two ``time.monotonic()`` readings (the clock is
system-wide, so the parent compares them with its own): when the first watch update after
``since`` reached the view (before the table applies it), and when the table showed the state.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from meshware import MeshView
from meshware.etcd import EtcdClient
from meshware.registry.etcd import EtcdRegistry


def main(endpoint: str, prefix: str) -> None:
    view = MeshView(EtcdRegistry(EtcdClient(endpoint, timeout=30)), prefix)
    arrivals: list[float] = []
    apply = view._apply

    def timed(table: Any, update: Any) -> Any:
        arrivals.append(time.monotonic())
        return apply(table, update)

    view._apply = timed  # type: ignore[method-assign]
    view.start()
    print("ready", flush=True)
    for line in sys.stdin:
        ask = json.loads(line)

        def seen(_: object, ask: dict[str, object] = ask) -> bool:
            found = None
            for i in view.table.instances(str(ask["service"])):
                if i.url == ask["url"]:
                    found = [i.state, i.weight]
            want = None if ask["state"] is None else [ask["state"], ask["weight"]]
            return found == want

        view.wait_for(seen, timeout=120)
        shown = time.monotonic()
        arrived = next((t for t in arrivals if t >= ask["since"]), shown)
        del arrivals[:]
        print(arrived, shown, flush=True)
    view.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

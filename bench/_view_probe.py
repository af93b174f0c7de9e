"""A MeshView in its own process for bench_registry.py: stdin asks, stdout answers.

Each request line is JSON ``{"service", "url", "state", "weight"}`` (``state`` null: the
instance is gone); the answer is the ``time.monotonic()`` at which the table first showed it
(the clock is system-wide, so the parent compares it with its own).
"""

from __future__ import annotations

import json
import sys
import time

from meshware import MeshView
from meshware.etcd import EtcdClient
from meshware.registry.etcd import EtcdRegistry


def main(endpoint: str, prefix: str) -> None:
    view = MeshView(EtcdRegistry(EtcdClient(endpoint, timeout=30)), prefix).start()
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
        print(time.monotonic(), flush=True)
    view.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

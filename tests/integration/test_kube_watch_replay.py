"""Watch streams in the shapes the Kubernetes API concepts documentation shows, replayed to the reflector.

The events below follow the documentation's examples ("Efficient detection of changes",
"Watch bookmarks", "410 Gone responses"): resourceVersions 10245 → 10596 → 11020, a BOOKMARK at
12746, and an ERROR event carrying a ``Status`` with code 410 / reason ``Expired``. They are served
over chunked HTTP by a server that is not l3net's stand-in, several events per chunk and one event
split across chunks, so the client's framing is tested against the wire format rather than against
our own server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from l3net.kube.api import KubeAPI
from l3net.kube.reflector import Reflector
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def pod(name: str, rv: str, phase: str) -> dict[str, Any]:
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": "test", "resourceVersion": rv},
            "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"phase": phase}}


STREAMS = {
    "10245": [{"type": "ADDED", "object": pod("foo", "10596", "Pending")},
              {"type": "MODIFIED", "object": pod("foo", "11020", "Running")},
              {"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                                              "metadata": {"resourceVersion": "12746"}}}],
    "12746": [{"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                           "status": "Failure",
                                           "message": "The resourceVersion for the provided watch is too old.",
                                           "reason": "Expired", "code": 410}}],
}
LISTS = [("10245", []), ("13000", [pod("foo", "12999", "Running")])]


class Recorded(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    watches: list[str] = []
    lists = 0
    release = threading.Event()

    def log_message(self, *_a: Any) -> None:
        return

    def do_GET(self) -> None:
        q = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        if q.get("watch") != "true":
            rv, items = LISTS[min(Recorded.lists, len(LISTS) - 1)]
            Recorded.lists += 1
            body = json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv},
                               "items": items}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        rv = q["resourceVersion"]
        Recorded.watches.append(rv)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        data = b"".join(json.dumps(e).encode() + b"\n" for e in STREAMS.get(rv, []))
        cut = len(data) // 2 + 7  # one event split across two chunks, the rest packed together
        for part in (data[:cut], data[cut:]):
            if part:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
        if rv not in STREAMS:
            Recorded.release.wait(10)  # the resumed watch stays open like a real one
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def replace(self, kind: str, items: list[dict[str, Any]]) -> None:
        self.calls.append(("replace", [i["metadata"]["resourceVersion"] for i in items]))

    def event(self, kind: str, etype: str, obj: dict[str, Any]) -> None:
        self.calls.append((etype, obj["metadata"]["resourceVersion"]))


@pytest.fixture
def recorded_api(tmp_path: Path) -> Iterator[KubeAPI]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Recorded)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "r",
                               "clusters": [{"name": "r", "cluster": {"server": f"http://127.0.0.1:{srv.server_port}"}}],
                               "users": [{"name": "r", "user": {}}],
                               "contexts": [{"name": "r", "context": {"cluster": "r", "user": "r"}}]}))
    api = KubeAPI(str(cfg))
    try:
        yield api
    finally:
        Recorded.release.set()
        api.close()
        srv.shutdown()
        srv.server_close()


def test_documented_stream_bookmark_and_410_replayed(recorded_api: KubeAPI) -> None:
    sink = Sink()
    r = Reflector(recorded_api, "Pod", sink, retry_initial=0.05).start()
    try:
        wait_for(lambda: Recorded.watches[-1:] == ["13000"], 10, "the watch resumed after the relist")
        assert sink.calls == [("replace", []), ("ADDED", "10596"), ("MODIFIED", "11020"), ("replace", ["12999"])]
        # list at 10245, watch from it; the stream ended after a bookmark: resume from the bookmark's
        # version (not the last event's), get 410, relist, and watch from the new list's version
        assert Recorded.watches == ["10245", "12746", "13000"]
        assert (r.bookmarks, r.relists_gone, r.lists) == (1, 1, 2)
    finally:
        r.stop()
        Recorded.release.set()

"""FelixConfiguration read live by the real agent (``l3net agent`` in a node namespace, real etcd, real iptables):
``default`` then ``node.<name>`` change routeRefreshInterval without a restart, and the new interval heals drift;
a non-live change is logged as needing a restart; a bad stored resource keeps the previous values."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from l3net import netns
from l3net.model.documents import load_documents
from tests.builders import gnp, ns
from tests.netns.felix_rig import Node
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.needs_etcd]


def put_felix_configuration(node: Node, name: str, spec: str) -> None:
    """Validated like l3netctl apply, stored like it."""
    (res,) = load_documents(f"apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\n"
                            f"metadata: {{name: {name}}}\nspec: {spec}\n", "test.yaml")
    node.ds.put(node.keys.resource("felixconfigurations", res.name), res.to_json())


def debug_config(node: Node) -> dict[str, Any]:
    code, body = node.http(9099, "/debug/config")
    assert code == 200, body
    return json.loads(body)


def refresh(node: Node) -> tuple[float, str]:
    cfg = debug_config(node)
    return cfg["values"]["route_refresh_interval"], cfg["sources"]["route_refresh_interval"]


def _hook(save: str) -> list[str] | None:
    for line in save.splitlines():
        if line.startswith("-A FORWARD ") and "-j l3n-FORWARD" in line:
            return shlex.split(line)[2:]
    return None


def _filter_save(node: Node) -> str:
    return netns.run(node.ns, ["iptables-save", "-t", "filter"]).stdout


def test_default_then_node_resource_change_the_refresh_interval_live(node: Node) -> None:
    node.add_workload("a", "10.65.0.2")
    for plural, res in (("namespaces", ns("default")),
                        ("globalnetworkpolicies", gnp("allow-in", {"order": 10, "selector": "all()",
                                                                   "types": ["Ingress"],
                                                                   "ingress": [{"action": "Allow"}]}))):
        node.ds.put(node.keys.resource(plural, res.name, res.namespace), res.to_json())
    put_felix_configuration(node, "default", "{routeRefreshInterval: 10m}")
    put_felix_configuration(node, "node.n2", "{routeRefreshInterval: 1s}")   # another node's: not ours
    node.start_agent()
    wait_for(node.ready, what="readiness")
    assert refresh(node) == (600.0, "FelixConfiguration default")   # read at start

    # default changes live; then node.n1 beats it, live.
    put_felix_configuration(node, "default", "{routeRefreshInterval: 5m}")
    wait_for(lambda: refresh(node) == (300.0, "FelixConfiguration default"), what="default applied live")
    put_felix_configuration(node, "node.n1", "{routeRefreshInterval: 2s}")
    wait_for(lambda: refresh(node) == (2.0, "FelixConfiguration node.n1"), what="node.n1 applied live")
    assert "'route_refresh_interval': '2.0 (from FelixConfiguration node.n1)'" in node.log()

    # The interval is really the loop's: a deleted chain is restored by the next refresh (not the 5m one).
    wait_for(lambda: _hook(_filter_save(node)), what="l3n-FORWARD hooked")
    netns.run(node.ns, ["iptables", "-D", "FORWARD", *_hook(_filter_save(node))])  # type: ignore[misc]
    netns.run(node.ns, ["iptables", "-F", "l3n-FORWARD"])
    netns.run(node.ns, ["iptables", "-X", "l3n-FORWARD"])
    wait_for(lambda: _hook(_filter_save(node)), timeout=30, what="l3n-FORWARD restored by the 2s refresh")

    # A setting that is read at start: logged as needing a restart, the running value kept.
    put_felix_configuration(node, "node.n1", "{routeRefreshInterval: 2s, healthPort: 9199}")
    wait_for(lambda: "configuration changes need an agent restart to take effect params={'health_port': "
                     "'9199 (from FelixConfiguration node.n1)'}" in node.log(), what="restart needed, logged")
    cfg = debug_config(node)   # still answering on the port it started with
    assert cfg["values"]["health_port"] == 9099 and cfg["pendingRestart"] == {"health_port": 9199}

    # Written past l3netctl and invalid: logged, and the previous node.n1 values stay.
    bad = {"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration", "metadata": {"name": "node.n1"},
           "spec": {"routeRefreshInterval": "soon"}}
    node.ds.put(node.keys.resource("felixconfigurations", "node.n1"), json.dumps(bad).encode())
    wait_for(lambda: "invalid FelixConfiguration in the datastore, keeping its previous values resource=node.n1"
             in node.log(), what="bad resource logged")
    assert refresh(node) == (2.0, "FelixConfiguration node.n1")

    # Deleted: default applies again, live; the agent never restarted.
    node.ds.delete(node.keys.resource("felixconfigurations", "node.n1"))
    wait_for(lambda: refresh(node) == (300.0, "FelixConfiguration default"), what="back to default")
    assert debug_config(node)["pendingRestart"] == {}
    assert node.proc is not None and node.proc.poll() is None

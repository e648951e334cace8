"""l3net.lab.faults: break a running lab on purpose, one call per fault (``l3net lab node|link|netem|etcd``).

One line each, from a test or a shell::

    from l3net.lab import faults
    state = faults.lab_state("two-node-rr")          # or the LabState a test already holds
    faults.node_pause(state, "n1")                   # freeze every process of n1 (docker pause)
    faults.node_unpause(state, "n1")
    faults.node_stop(state, "n1"); faults.node_start(state, "n1"); faults.node_restart(state, "n1")
    faults.link_set(state, "n1:eth1", up=False)      # admin down, as `ip link set dev eth1 down` in n1
    faults.netem(state, "n1:eth1", delay_ms=50, jitter_ms=5, loss_pct=100)
    faults.netem_clear(state, "n1:eth1")
    faults.etcd_pause(state)                         # every member; or faults.etcd_pause(state, "e2")
    faults.etcd_stop(state, faults.etcd_leader(state)); faults.etcd_start(state)

What each verb does, exactly:

- ``node stop`` ends every process of the node's cgroup (its agent or reflector with ExaBGP, its
  ``cmd``, whatever its ``exec`` lines or ``lab exec`` left running): SIGKILL at once, or SIGTERM
  and SIGKILL after ``grace`` seconds. The namespace and its links stay, like a container whose
  processes died; the kernel closes the node's TCP sessions, so its peers see a reset.
- ``node start`` runs the node's entrypoint again (role daemon, then ``cmd``), with the node's
  recorded environment; ``exec`` lines are not run again (containerlab runs them once, at deploy).
  ``lab status`` shows the new PIDs. ``restart`` = stop + start.
- ``node pause``/``unpause`` freeze/thaw the node's cgroup: the processes hold their sockets but
  answer nothing, so peers notice only when their hold timers expire.
- ``link set NODE:IF down|up``: the interface's admin state inside the node; the veth peer loses
  carrier, and the kernel drops the routes through the interface on the node.
- ``netem NODE:IF``: a ``tc qdisc replace ... root netem`` on that interface (egress of the node);
  ``netem_clear`` deletes it. Loss is a percentage, delay and jitter milliseconds. On a kernel
  without the netem qdisc, nftables (loss) or an NFQUEUE delayer (delay) stand in (see :func:`netem`).
- ``etcd stop|start|pause|unpause [MEMBER]``: a member (or every member) of the lab's own etcd,
  through its cgroup: stop = SIGKILL (a crash) unless ``grace``; pause = freeze (a hung disk: TCP
  stays open, nothing answers). ``etcd_leader`` names the current leader.

Every verb raises :class:`LabError` with a sentence for a user mistake (unknown node, interface or
member, a lab using an external etcd); nothing is changed then.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from l3net import netns
from l3net.lab import cgroups as cg
from l3net.lab import checks
from l3net.lab import state as st
from l3net.lab.errors import LabError
from l3net.lab.runtime import _ip, start_etcd_member, start_node_processes

_log = logging.getLogger(__name__)

_IFNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")


def lab_state(name: str | None = None) -> st.LabState:
    """The state of lab ``name`` (or of the only running lab); LabError if there is none."""
    if name is None:
        labs = st.running_labs()
        if len(labs) != 1:
            raise LabError("no lab is running" if not labs else f"several labs run ({', '.join(labs)}): name one")
        name = labs[0]
    state = st.LabState.load(name)
    if state is None:
        raise LabError(f"lab {name!r} is not running (no state in {st.lab_dir(name)})")
    return state


def _fresh(state: st.LabState) -> st.LabState:
    # Another process (the CLI, a test) may have restarted something: always act on the current record.
    fresh = st.LabState.load(state.name)
    if fresh is not None:
        state.data = fresh.data
    return state


def _node(state: st.LabState, node: str) -> dict[str, Any]:
    rec = state.data["nodes"].get(node)
    if rec is None:
        raise LabError(f"node {node!r}: not a node of lab {state.name} (nodes: {', '.join(state.data['nodes'])})")
    if rec.get("kind") != "linux":
        raise LabError(f"node {node!r} is of kind {rec.get('kind')}: it runs no processes")
    if not rec.get("cgroup"):
        raise LabError(f"lab {state.name} was brought up by an older l3net without cgroups: bring it down and up")
    return rec


def _group(path: str) -> Path:
    return Path(path)


# -- nodes -------------------------------------------------------------------------

def node_pids(state: st.LabState, node: str) -> list[int]:
    """Every process of ``node`` (its cgroup), whoever started it."""
    return cg.pids(_group(_node(_fresh(state), node)["cgroup"]))


def node_stop(state: st.LabState, node: str, grace: float = 0.0) -> int:
    """End every process of ``node``; returns how many there were. Idempotent."""
    rec = _node(_fresh(state), node)
    group = _group(rec["cgroup"])
    try:
        n = cg.kill(group, grace=grace)
    except cg.CgroupError as exc:
        raise LabError(f"node {node}: {exc}") from exc
    _log.info("node stopped lab=%s node=%s processes=%d", state.name, node, n)
    return n


def node_start(state: st.LabState, node: str) -> list[int]:
    """Run ``node``'s entrypoint again; LabError if the node still runs processes (use restart)."""
    with _fresh(state).locked():
        rec = _node(state, node)
        if cg.populated(_group(rec["cgroup"])):
            raise LabError(f"node {node} is running ({len(cg.pids(_group(rec['cgroup'])))} processes): "
                           "stop it first, or use restart")
        if not rec.get("start"):
            raise LabError(f"node {node} has no role and no cmd: nothing to start")
        try:
            pids = start_node_processes(state, node)
        except cg.CgroupError as exc:
            raise LabError(f"node {node}: {exc}") from exc
    _log.info("node started lab=%s node=%s pids=%s", state.name, node, pids)
    return pids


def node_restart(state: st.LabState, node: str, grace: float = 0.0) -> list[int]:
    node_stop(state, node, grace=grace)
    return node_start(state, node)


def node_pause(state: st.LabState, node: str) -> None:
    """Freeze every process of ``node`` (``docker pause``)."""
    _freeze_node(state, node, True)


def node_unpause(state: st.LabState, node: str) -> None:
    _freeze_node(state, node, False)


def _freeze_node(state: st.LabState, node: str, frozen: bool) -> None:
    rec = _node(_fresh(state), node)
    try:
        cg.freeze(_group(rec["cgroup"]), frozen)
    except cg.CgroupError as exc:
        raise LabError(f"node {node}: {exc}") from exc
    _log.info("node %s lab=%s node=%s", "paused" if frozen else "unpaused", state.name, node)


def node_paused(state: st.LabState, node: str) -> bool:
    return cg.is_frozen(_group(_node(_fresh(state), node)["cgroup"]))


# -- links -------------------------------------------------------------------------

def parse_endpoint(state: st.LabState, endpoint: str) -> tuple[str, str]:
    """``NODE:IF`` -> (netns, ifname), checked against the lab; LabError naming what is wrong."""
    node, sep, iface = endpoint.partition(":")
    if not sep or not node or not iface:
        raise LabError(f"{endpoint!r}: expected NODE:INTERFACE, e.g. n1:eth1")
    if not _IFNAME.match(iface):
        raise LabError(f"{endpoint!r}: {iface!r} is not an interface name")
    rec = state.data["nodes"].get(node)
    if rec is None:
        raise LabError(f"{endpoint!r}: {node!r} is not a node of lab {state.name} "
                       f"(nodes: {', '.join(state.data['nodes'])})")
    if _ip("-n", rec["netns"], "link", "show", "dev", iface, check=False).returncode != 0:
        raise LabError(f"{endpoint!r}: node {node} has no interface {iface}")
    return rec["netns"], iface


def link_set(state: st.LabState, endpoint: str, up: bool) -> None:
    """Set interface ``NODE:IF`` administratively up or down."""
    ns, iface = parse_endpoint(_fresh(state), endpoint)
    _ip("-n", ns, "link", "set", "dev", iface, "up" if up else "down")
    _log.info("link set lab=%s endpoint=%s state=%s", state.name, endpoint, "up" if up else "down")


def netem(state: st.LabState, endpoint: str, delay_ms: float = 0.0, jitter_ms: float = 0.0,
          loss_pct: float = 0.0) -> str:
    """Impair what ``NODE:IF`` sends: delay (with jitter) and random loss; replaces an earlier impairment.

    With ``tc qdisc ... netem`` where the kernel has it. On a kernel built without netem (as this
    project's test machines are): loss alone comes from an nftables table of the lab's own in the
    node (``numgen random``, hook postrouting, that interface only); a delay (with its jitter and
    loss) from :mod:`l3net.lab.delayer`, an NFQUEUE listener fed by one iptables rule (mangle
    POSTROUTING, ``-o IF``, comment ``l3net-lab-netem``). Returns the mechanism used: ``"tc-netem"``,
    ``"nft"`` or ``"nfqueue"``.
    """
    for field, value, top in (("delay", delay_ms, 60_000.0), ("jitter", jitter_ms, 60_000.0),
                              ("loss", loss_pct, 100.0)):
        if not (0.0 <= float(value) <= top):
            raise LabError(f"netem {field} {value}: must be between 0 and {top:g}")
    if jitter_ms and not delay_ms:
        raise LabError("netem jitter needs a delay (jitter varies the delay)")
    ns, iface = parse_endpoint(_fresh(state), endpoint)
    args = ["qdisc", "replace", "dev", iface, "root", "netem"]
    if delay_ms:
        args += ["delay", f"{float(delay_ms):g}ms"]
        if jitter_ms:
            args += [f"{float(jitter_ms):g}ms"]
    if loss_pct:
        args += ["loss", f"{float(loss_pct):g}%"]
    if len(args) == 6:
        args += ["delay", "0ms"]  # an explicit no-op impairment, so the qdisc is visibly ours
    proc = subprocess.run(["tc", "-n", ns, *args], capture_output=True, text=True, timeout=30)
    if proc.returncode == 0:
        _nft_clear(ns, iface)
        how = "tc-netem"
    elif "qdisc kind is unknown" in proc.stderr:
        node = endpoint.partition(":")[0]
        _delayer_stop(state, node, ns, iface)
        _nft_clear(ns, iface)
        if delay_ms:
            _delayer_start(state, node, ns, iface, float(delay_ms), float(jitter_ms), float(loss_pct))
            how = "nfqueue"
        else:
            _nft_loss(ns, iface, float(loss_pct))
            how = "nft"
    else:
        raise LabError(f"tc {' '.join(args)} (netns {ns}): {proc.stderr.strip()}")
    _log.info("netem lab=%s endpoint=%s delay_ms=%s jitter_ms=%s loss_pct=%s via=%s", state.name, endpoint,
              delay_ms, jitter_ms, loss_pct, how)
    return how


def netem_clear(state: st.LabState, endpoint: str) -> None:
    """Remove the impairment from ``NODE:IF`` (idempotent)."""
    ns, iface = parse_endpoint(_fresh(state), endpoint)
    shown = _tc(ns, "qdisc", "show", "dev", iface, "root")
    if " netem " in f" {shown} ":
        _tc(ns, "qdisc", "del", "dev", iface, "root")
    _nft_clear(ns, iface)
    _delayer_stop(state, endpoint.partition(":")[0], ns, iface)
    _log.info("netem cleared lab=%s endpoint=%s", state.name, endpoint)


def _tc(ns: str, *args: str) -> str:
    proc = subprocess.run(["tc", "-n", ns, *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise LabError(f"tc {' '.join(args)} (netns {ns}): {proc.stderr.strip()}")
    return proc.stdout


_LOSS_SCALE = 1_000_000  # loss resolution: a millionth


def _ifindex(ns: str, iface: str) -> int:
    out = _ip("-n", ns, "-j", "link", "show", "dev", iface).stdout
    return int(json.loads(out)[0]["ifindex"])


def _nft_table(ns: str, iface: str) -> str:
    # Named by ifindex: one table of ours per interface, never a name taken from user text.
    return f"l3net_lab_netem_{_ifindex(ns, iface)}"


def _nft(ns: str, script: str) -> None:
    proc = subprocess.run(["nsenter", f"--net={netns.netns_path(ns)}", "--", "nft", "-f", "-"], input=script,
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise LabError(f"nft (netns {ns}): {proc.stderr.strip()}")


def _nft_loss(ns: str, iface: str, loss_pct: float) -> None:
    table, ifindex = _nft_table(ns, iface), _ifindex(ns, iface)
    threshold = round(loss_pct / 100.0 * _LOSS_SCALE)
    if threshold >= _LOSS_SCALE:
        rule = f"oif {ifindex} counter drop"
    elif threshold > 0:
        rule = f"oif {ifindex} numgen random mod {_LOSS_SCALE} < {threshold} counter drop"
    else:
        rule = f"oif {ifindex} counter"  # 0 %: visibly ours, drops nothing
    # Declared, deleted and re-made in one transaction: replacing an earlier loss is atomic.
    _nft(ns, f"table inet {table} {{}}\ndelete table inet {table}\n"
             f"table inet {table} {{\n chain egress {{\n  type filter hook postrouting priority -300; policy accept;\n"
             f"  {rule}\n }}\n}}\n")


def _delayer_group(state: st.LabState, node: str, iface: str) -> Path:
    return Path(state.data["cgroup"]) / f"netem.{node}.{iface}"


def _nfqueue_rule(op: str, iface: str, queue: int) -> list[str]:
    return ["iptables", "-w", "5", "-t", "mangle", op, "POSTROUTING", "-o", iface, "-m", "comment", "--comment",
            "l3net-lab-netem", "-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"]


def _in_ns(ns: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={netns.netns_path(ns)}", "--", *argv], capture_output=True,
                          text=True, timeout=30)


def _delayer_start(state: st.LabState, node: str, ns: str, iface: str, delay_ms: float, jitter_ms: float,
                   loss_pct: float) -> None:
    """Run :mod:`l3net.lab.delayer` in the node's namespace (its own cgroup, not the node's: pausing the
    node must not freeze its link) and queue what ``iface`` sends to it."""
    queue = _ifindex(ns, iface)  # queue numbers are per namespace, like interface indexes
    group = _delayer_group(state, node, iface)
    cg.create(group)
    log = state.dir / "logs" / f"{node}.netem-{iface}.log"
    argv = ["nsenter", f"--net={netns.netns_path(ns)}", "--", sys.executable, "-m", "l3net.lab.delayer",
            "--queue", str(queue), "--delay", f"{delay_ms:g}", "--jitter", f"{jitter_ms:g}", "--loss", f"{loss_pct:g}"]
    with open(log, "ab") as fh:
        start = fh.tell()
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                         start_new_session=True, preexec_fn=cg.enter_fn(group))

    def ready() -> bool:
        return b"ready" in log.read_bytes()[start:] or not cg.populated(group)
    with contextlib.suppress(TimeoutError):
        checks.wait_for(ready, 15, f"the delayer for {node}:{iface}")
    if not cg.populated(group) or b"ready" not in log.read_bytes()[start:]:
        tail = log.read_bytes()[start:].decode(errors="replace")[-600:]
        cg.remove(group)
        raise LabError(f"netem on {node}:{iface}: the delayer did not start (log {log}):\n{tail}")
    proc = _in_ns(ns, _nfqueue_rule("-A", iface, queue))
    if proc.returncode != 0:
        cg.remove(group)
        raise LabError(f"netem on {node}:{iface}: iptables refused the NFQUEUE rule: {proc.stderr.strip()}")


def _delayer_stop(state: st.LabState, node: str, ns: str, iface: str) -> None:
    queue = _ifindex(ns, iface)
    # The rule first: with --queue-bypass, packets flow straight once it is gone, never into a dead queue.
    for _ in range(16):
        if _in_ns(ns, _nfqueue_rule("-C", iface, queue)).returncode != 0:
            break
        _in_ns(ns, _nfqueue_rule("-D", iface, queue))
    group = _delayer_group(state, node, iface)
    if group.exists():
        cg.signal_all(group, signal.SIGTERM)  # it accepts what it holds, then exits
        with contextlib.suppress(TimeoutError):
            checks.wait_for(lambda: not cg.populated(group), 3, "the delayer to exit")
        try:
            cg.remove(group)
        except cg.CgroupError as exc:
            raise LabError(f"netem on {node}:{iface}: {exc}") from exc


def _nft_clear(ns: str, iface: str) -> None:
    table = _nft_table(ns, iface)
    _nft(ns, f"table inet {table} {{}}\ndelete table inet {table}\n")


# -- etcd --------------------------------------------------------------------------

def etcd_members(state: st.LabState) -> list[str]:
    """Names of the lab's own etcd members (``e1``...); LabError for a lab on an external etcd."""
    etcd = _fresh(state).data.get("etcd", {})
    if not etcd.get("own"):
        raise LabError(f"lab {state.name} uses an external etcd ({etcd.get('endpoints')}): "
                       "the lab can only break the etcd it runs")
    if not etcd.get("members"):
        raise LabError(f"lab {state.name} was brought up by an older l3net: bring it down and up")
    return sorted(etcd["members"])


def _members(state: st.LabState, member: str | None) -> list[str]:
    names = etcd_members(state)
    if member is None:
        return names
    if member not in names:
        raise LabError(f"etcd member {member!r}: lab {state.name} has {', '.join(names)}")
    return [member]


def _member_group(state: st.LabState, member: str) -> Path:
    return _group(state.data["etcd"]["members"][member]["cgroup"])


def etcd_stop(state: st.LabState, member: str | None = None, grace: float = 0.0) -> list[str]:
    """Kill etcd ``member`` (default: every member) at once, or SIGTERM then SIGKILL after ``grace``."""
    names = _members(state, member)
    for m in names:
        try:
            cg.kill(_member_group(state, m), grace=grace)
        except cg.CgroupError as exc:
            raise LabError(f"etcd member {m}: {exc}") from exc
        _log.info("etcd member stopped lab=%s member=%s", state.name, m)
    return names


def etcd_start(state: st.LabState, member: str | None = None, timeout: float = 30.0) -> list[str]:
    """Start stopped members (default: every stopped one) on their data; wait until each is healthy."""
    names = _members(state, member)
    todo = [m for m in names if not cg.populated(_member_group(state, m))]
    if member is not None and not todo:
        raise LabError(f"etcd member {member} is running")
    servers = [(m, start_etcd_member(state, m, wait=False)) for m in todo]
    from l3net.lab.runtime import wait_etcd_member

    for m, server in servers:
        wait_etcd_member(state, m, server, timeout=timeout)
        _log.info("etcd member started lab=%s member=%s", state.name, m)
    return todo


def etcd_pause(state: st.LabState, member: str | None = None) -> list[str]:
    """Freeze etcd ``member`` (default: every member): connections stay open, nothing answers."""
    return _freeze_members(state, member, True)


def etcd_unpause(state: st.LabState, member: str | None = None) -> list[str]:
    return _freeze_members(state, member, False)


def _freeze_members(state: st.LabState, member: str | None, frozen: bool) -> list[str]:
    names = _members(state, member)
    for m in names:
        try:
            cg.freeze(_member_group(state, m), frozen)
        except cg.CgroupError as exc:
            raise LabError(f"etcd member {m}: {exc}") from exc
        _log.info("etcd member %s lab=%s member=%s", "paused" if frozen else "unpaused", state.name, m)
    return names


def etcd_member_state(state: st.LabState, member: str) -> str:
    """``running``, ``paused`` or ``stopped``."""
    group = _member_group(state, _members(state, member)[0])
    if not cg.populated(group):
        return "stopped"
    return "paused" if cg.is_frozen(group) else "running"


def etcd_leader(state: st.LabState, timeout: float = 10.0) -> str:
    """The member that leads now, as a running member reports it; LabError if none does within ``timeout``."""
    from l3net.lab.etcdserver import member_status

    names = etcd_members(state)
    members = state.data["etcd"]["members"]
    deadline = time.monotonic() + timeout
    while True:
        ids: dict[str, str] = {}
        leaders: set[str] = set()
        for m in names:
            if etcd_member_state(state, m) != "running":
                continue
            status = member_status(members[m]["socket"])
            if status is None:
                continue
            ids[status["member_id"]] = m
            if status["leader"] and status["leader"] != "0":
                leaders.add(status["leader"])
        if len(leaders) == 1 and next(iter(leaders)) in ids:
            return ids[next(iter(leaders))]
        if time.monotonic() > deadline:
            raise LabError(f"no etcd leader within {timeout:.0f}s (members answering: {sorted(ids.values())})")
        time.sleep(0.1)


def etcd_pids(state: st.LabState, member: str) -> list[int]:
    return cg.pids(_member_group(state, _members(state, member)[0]))

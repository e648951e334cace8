"""felix.main: the composition root of the node agent.

config → datastore → syncer → calculation → sync loop → drivers, plus the
health and metrics endpoints, the node's own registration, its leased status
key, the BGP speaker and the policy drivers (each switched on or off by
configuration; every part is a plain import, so a broken package fails at start,
loudly, instead of running half-wired). Exits only for broken invariants (a bug
in a helper thread); data the kernel refuses and failed applies are contained by
the sync loop (DESIGN §7). A restarted agent adopts the kernel state it finds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import faulthandler
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import bgp.bfd.metrics
import bgp.bfd.peers
import bgp.bfd.status
import bgp.metrics
import bgp.secrets
import bgp.speaker
import bgp.status
import bgp.view
import policy.compiler
from felix import cniserver, felixconfig
from felix import config as felix_config
from felix.addtrace import TraceBook
from felix.autonomy import CachedStartSink, config_from_view, probe_reporter, view_cache
from felix.calc import BuildBGPView, Model
from felix.config import AgentConfig
from felix.dataplane import Dataplane
from felix.desired import DesiredState
from felix.drivers.interfaces import InterfaceDriver, LinkWatcher, ProcSysctls
from felix.drivers.ipsets import IpsetDriver
from felix.drivers.iptables import IptablesDriver
from felix.drivers.routes import PyrouteNetlink, RouteDriver
from felix.endpointready import ProgrammedEndpoints
from felix.felixconfig import FelixConfigView
from felix.links import Link
from felix.loop import LoopConfig, SyncLoop, ThreadSafeSink
from felix.quarantine import PolicyBuilder
from felix.registration import ensure_default_pool, register_node
from l3net import metrics
from l3net.datastore import connect_from_env
from l3net.datastore.base import Datastore
from l3net.datastore.probe import DatastoreProbe
from l3net.errors import DatastoreError
from l3net.health import HealthServer, HealthState
from l3net.keys import KeyLayout
from l3net.nodestatus import StatusPublisher
from l3net.syncer import Syncer
from l3net.viewcache import CachedView, CacheWriter, ViewCache

_log = logging.getLogger(__name__)

SYNCER_RETRY_MAX = 1.0
# The last ADD traces (felix.addtrace) as JSON, on the health server.
TRACES_PATH = "/debug/traces"
# The agent's effective settings and where each came from, on the health server.
CONFIG_PATH = "/debug/config"


def bgp_ipam_facts(model: Model, node: str) -> bgp.view.IpamFacts:
    """What the BGP import defaults need: pools, the owner of every confirmed block and workload address."""
    return bgp.view.IpamFacts(
        pools=tuple(p.cidr_text for p in model.pools.values()),
        block_owner=model.block_owners(),
        address_owner=model.address_owners(), local_workloads=model.workload_addresses(node))


def bgp_builder(secrets_dir: str = "") -> BuildBGPView:
    """Node, BGPConfiguration, BGPPeer and BGPFilter resources, and IPAM → this node's ``bgp.view.NodeBGPView``.

    ``secrets_dir``: where ``secretKeyRef`` passwords are read (empty: secretKeyRef peers are refused).
    """
    secrets = bgp.secrets.SecretReader(secrets_dir) if secrets_dir else None

    def build(model: Model, node: str) -> bgp.view.NodeBGPView:
        # The facts copy the model's counted workload addresses and walk every pool and block: kept while the
        # model is unchanged, and the same object lets the view reuse its import context too.
        ipam = model.derived(f"bgp-ipam-facts/{node}", lambda: bgp_ipam_facts(model, node))
        return bgp.view.build_node_view(node, model.resources_of("Node"), model.resources_of("BGPConfiguration"),
                                          model.resources_of("BGPPeer"), model.resources_of("BGPFilter"),
                                          secrets=secrets, ipam=ipam)
    return build


def policy_builder(compiler: policy.compiler.PolicyCompiler | None = None,
                   settings: Callable[[], AgentConfig] | None = None) -> PolicyBuilder:
    """NetworkPolicy and GlobalNetworkPolicy → this node's iptables/ipsets program.

    ``compiler`` is the agent's one long-lived :class:`policy.compiler.PolicyCompiler`
    (it caches compiled chains per policy and selector members, so an apply after a
    small change recompiles only what changed); the builder is called on the loop
    thread only, one call at a time, as the compiler requires. It leaves out the
    objects the kernel refused (:mod:`felix.quarantine`). ``settings`` returns the
    agent's current configuration (read on every build, so the endpoint-to-host settings
    are live); without it Calico's defaults apply (Drop, no failsafe ports for workloads).
    """
    return PolicyBuilder(compiler, settings)


def resolve_node_ip(cfg: AgentConfig) -> str | None:
    """``a.b.c.d/len`` for this node, or None (``ip=none`` or nothing detected)."""
    if cfg.ip == "none":
        return None
    if cfg.ip != "autodetect":
        return str(cfg.ip)
    from felix.nodeip import autodetect

    found = autodetect(cfg.ip_autodetection_method)
    if found is None:
        _log.warning("no node IPv4 address found method=%s", cfg.ip_autodetection_method)
        return None
    _log.info("node IPv4 address autodetected address=%s ifname=%s method=%s", found.interface, found.ifname,
              cfg.ip_autodetection_method)
    return found.interface


def config_report(cfg: AgentConfig, pending: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"values", "sources", "pendingRestart"}`` of the settings in effect, JSON-safe (tuples become lists)."""
    def safe(v: Any) -> Any:
        return [safe(x) for x in v] if isinstance(v, tuple | list) else v
    return {"values": {k: safe(v) for k, v in cfg.as_dict().items()}, "sources": dict(cfg.sources),
            "pendingRestart": {k: safe(v) for k, v in (pending or {}).items()}}


class _ConfigWatchingSink(ThreadSafeSink):
    """A :class:`ThreadSafeSink` that, on the loop thread, hands each batch to ``after`` once the loop
    has taken it (so the model already holds the batch). Owns nothing; never raises on its own."""

    def __init__(self, target: SyncLoop, loop: asyncio.AbstractEventLoop,
                 after: Callable[[list[Any]], None]) -> None:
        super().__init__(target, loop)
        self.after = after

    def on_updates(self, updates: Any) -> None:
        self.loop.call_soon_threadsafe(self._deliver, list(updates))

    def _deliver(self, updates: list[Any]) -> None:
        self.target.on_updates(updates)
        self.after(updates)


class Agent:
    """Wires and runs everything on one asyncio loop; :meth:`run` returns the exit code."""

    def __init__(self, cfg: AgentConfig, ds: Datastore, node_ip: str | None, health: HealthState, *,
                 base_cfg: AgentConfig | None = None, cache: ViewCache | None = None,
                 initial_view: CachedView | None = None, traces: TraceBook | None = None,
                 felix_view: FelixConfigView | None = None) -> None:
        self.cfg = cfg
        self.traces = traces or TraceBook()
        self.cache = cache
        self.initial_view = initial_view
        # Flags, environment and defaults only: datastore overrides are re-applied on top of it.
        self.base_cfg = base_cfg or cfg
        self.ds = ds
        self.keys = KeyLayout(cfg.etcd_prefix)
        self.node = cfg.node
        # This node's FelixConfiguration resources (last good of each), layered over the config/ keys.
        self.felix_view = felix_view or FelixConfigView(self.keys, self.node)
        self._felix_seen_live = False
        self._live_revision: int | None = None  # the model revision of the first live in-sync (not the cache's)
        self.pending_restart: dict[str, Any] = {}  # wanted values of non-live parameters, until a restart
        self.node_ip = node_ip
        self.health = health
        self.io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="l3net-kernel")
        self.status = StatusPublisher(ds, self.keys, self.node, ttl=cfg.status_ttl)
        self.fatal: BaseException | None = None
        self.sync: SyncLoop | None = None
        self.speaker: Any = None
        self.bfd: bgp.bfd.peers.BfdPeers | None = None
        self.compiler = policy.compiler.PolicyCompiler()
        self._policy_metrics: dict[str, float] = {}
        self._metrics_of: object = None   # the policy program _policy_metrics were computed from
        metrics.SOURCED.set_source("policy", lambda: self._policy_metrics)
        self._stop_registration = threading.Event()
        self.cni: cniserver.CNIServer | None = None
        self.programmed = ProgrammedEndpoints()
        self._nat_warned: Any = None  # the NatOutgoing last warned about (policy disabled)

    # -- background registration (retried while the datastore is down) ----------
    def _register_forever(self, on_fatal: Callable[[BaseException], None]) -> None:
        """Datastore errors are retried; anything else is a bug handed to ``on_fatal`` (the agent dies)."""
        delay = 0.5
        while not self._stop_registration.is_set():
            try:
                ip = self.node_ip if self.node_ip else None
                register_node(self.ds, self.keys, self.node, ip, self.cfg.as_number)
                if self.cfg.default_ipv4_pool:
                    ensure_default_pool(self.ds, self.keys, self.cfg.default_ipv4_pool)
                return
            except DatastoreError as exc:
                _log.warning("node registration failed, retrying in %.1fs error=%s", delay, exc)
                self._stop_registration.wait(delay)
                delay = min(delay * 2, 10.0)
            except Exception as exc:
                _log.critical("node registration thread died node=%s", self.node, exc_info=True)
                on_fatal(exc)
                return

    def _on_applied(self, desired: DesiredState) -> None:
        metrics.BGP_ADVERTISEMENTS.set(len(desired.advertisements))
        if not self.cfg.policy_enabled and desired.nat.masq_pools and desired.nat != self._nat_warned:
            # natOutgoing rides on the policy side's iptables driver: say so rather than ignore the flag quietly.
            _log.warning("natOutgoing is NOT applied: policy is disabled (policy_enabled=false) pools=%s",
                         ",".join(desired.nat.masq_pools))
            self._nat_warned = desired.nat
        try:
            if self.speaker is not None:
                view = desired.bgp_view
                if view is not None and view.local_addresses:
                    refreshed = view.errors != getattr(self.speaker.view, "errors", ())
                    self.speaker.set_view(view)
                    if refreshed:
                        self._on_peers(self.speaker.peer_status())   # the status shows refused peers too
                    if self.bfd is not None:
                        self.bfd.set_view(view)
                    if not view.peers and self._from_live_datastore():
                        self.sync.on_bgp_converged()  # type: ignore[union-attr]  # nothing to wait for
                self.speaker.set_advertisements({a.prefix: None for a in desired.advertisements})
                if self.sync is not None:
                    # set_advertisements writes the commands to ExaBGP's pipe before it returns
                    self.traces.mark_all(self.sync.tracing, "bgp_announce")
        finally:
            # After the announcement, which a new block's or pod's route waits for; these walk every local route
            # and every policy rule.
            if self.sync is not None:
                self.programmed.applied(self.sync.applied_revision,
                                        (r.ifname for r in desired.routes if r.kind == "workload" and r.ifname))
            program = self.sync.last_program if self.sync is not None else None
            if program is not None and program is not self._metrics_of:
                # Computed here, on the loop thread, once per program; the scrape thread only reads the finished dict.
                self._policy_metrics = program.metrics()
                self._metrics_of = program
        ready, reasons = self.health.readiness()
        self.status.update(ready=ready, notReady=reasons, warnings=self.health.warnings(), routes=len(desired.routes),
                           localEndpoints=desired.local_endpoints, address=self.node_ip,
                           quarantined=self.sync.quarantined() if self.sync is not None else [])

    def _on_live_in_sync(self) -> None:
        """On the loop thread, after the loop took a live in-sync: the model revision from which on it is live."""
        if self.sync is not None:
            self._live_revision = self.sync.model.revision

    def _from_live_datastore(self) -> bool:
        """Whether the route side last applied a model read from the live datastore, not from the cached view:
        a view cached before the peers' Nodes were written has no peers, and "no peer, so nothing to wait
        for" would let stale learned routes be swept before the real peers sent theirs."""
        return (self.sync is not None and self._live_revision is not None
                and self.sync.routes_side.revision >= self._live_revision)

    def _die(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        if self.sync is not None:
            self.sync.stop()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        routes_nl = await loop.run_in_executor(self.io, PyrouteNetlink)
        ipsets = iptables = None
        if cfg.policy_enabled:
            # No refresh timer of their own: the loop's periodic refresh invalidates their views
            # (Dataplane.refresh), so routes, iptables and ipsets heal on one schedule.
            ipsets = IpsetDriver(refresh_interval=None)
            iptables = IptablesDriver(backend=cfg.iptables_backend, refresh_interval=None)
            metrics.SOURCED.set_source("iptables", iptables.stats)
            metrics.SOURCED.set_source("ipsets", ipsets.stats)
        else:
            _log.warning("policy disabled by configuration (policy_enabled=false): NetworkPolicy is not enforced")
        dataplane = Dataplane(RouteDriver(routes_nl), InterfaceDriver(ProcSysctls()), ipsets=ipsets,
                              iptables=iptables)
        node_ips = [self.node_ip.split("/")[0]] if self.node_ip else []
        build_policy = policy_builder(self.compiler, lambda: self.cfg) if iptables is not None else None
        self.sync = sync = SyncLoop(Model(self.keys), self.node, dataplane, config=loop_config(cfg),
                                    health=self.health, node_ips=node_ips,
                                    bgp_builder=bgp_builder(cfg.bgp_secrets_dir) if cfg.bgp_enabled else None,
                                    policy_builder=build_policy,
                                    on_applied=self._on_applied, on_config=self._on_config, io_executor=self.io,
                                    traces=self.traces)

        def on_links(links: dict[str, Link]) -> None:
            loop.call_soon_threadsafe(sync.on_links, links)

        watcher = LinkWatcher(on_links, on_error=lambda e: loop.call_soon_threadsafe(self._die, e))
        sync.on_links(await loop.run_in_executor(None, watcher.start))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, sync.stop)

        def on_fatal(exc: BaseException) -> None:
            loop.call_soon_threadsafe(self._die, exc)

        self._start_cni()
        threading.Thread(target=self._register_forever, args=(on_fatal,), name="l3net-register",
                         daemon=True).start()
        self.status.start(on_fatal=on_fatal)
        await self._start_bgp(sync)

        # Autonomy: a restart while the datastore is down starts from the last good view on disk.
        sink = CachedStartSink(_ConfigWatchingSink(sync, loop, self._after_updates), self.health,
                               on_live=lambda: loop.call_soon_threadsafe(self._on_live_in_sync))
        writer = CacheWriter(self.cache) if self.cache is not None else None
        if self.initial_view is not None:
            sink.start_from(self.initial_view)
        # Retries capped at 1 s: after an outage the agent must catch up within seconds of etcd's return.
        syncer = Syncer(self.ds, self.keys.prefix, sink, retry_initial=0.1,
                        retry_max=SYNCER_RETRY_MAX, on_fatal=lambda e: loop.call_soon_threadsafe(self._die, e),
                        initial=self.initial_view, cache_writer=writer, before=self.keys.agent_view_end)
        metrics.SOURCED.set_source("syncer", lambda: {"l3net_resyncs_completed": syncer.resyncs,
                                                      "l3net_datastore_updates": syncer.updates})
        syncer.start()
        # A hung datastore answers nothing and fails nothing: only a probe with a timeout notices it.
        probe = DatastoreProbe(self.ds, probe_reporter(self.health, [syncer.restart_watch]),
                               interval=cfg.datastore_probe_interval, timeout=cfg.datastore_probe_timeout)
        probe.start()
        _log.info("agent started node=%s address=%s prefix=%s", self.node, self.node_ip, self.keys.prefix)
        code = 0
        try:
            await sync.run()
        finally:
            self._stop_registration.set()
            if self.cni is not None:
                await loop.run_in_executor(None, self.cni.stop)
            # Cancelling the watch ends the syncer thread at once (the etcd client no longer
            # deadlocks on a cancel while another thread reads the stream).
            await loop.run_in_executor(None, syncer.stop)
            probe.stop(timeout=0)
            if writer is not None:
                await loop.run_in_executor(None, writer.stop)
            watcher.stop()
            if self.bfd is not None:
                await self.bfd.stop()
            if self.speaker is not None:
                await self.speaker.stop()
            self.status.stop()
            for driver in (iptables, ipsets):   # their long-lived restore processes end with the agent
                if driver is not None:
                    await loop.run_in_executor(None, driver.close)
            self.io.shutdown(wait=False)
        if self.fatal is not None:
            _log.critical("agent exiting after a fatal error in a helper thread: %r", self.fatal)
            code = code or 2
        return code

    def _start_cni(self) -> None:
        """Serve l3net-cni requests on a unix socket (its own threads; the asyncio loop is never blocked).

        A socket that cannot be created is an error in the log and a readiness warning,
        not a dead agent: the plugin then runs in its own process (its fallback), only slower.
        """
        if self.cfg.cni_socket == "none":
            return
        path = self.cfg.cni_socket or cniserver.default_socket_path(self.cfg.run_dir)
        cniserver.register_into(metrics.REGISTRY)
        server = cniserver.CNIServer(path, cniserver.plugin_handler(self.ds, self.cfg.etcd_endpoints,
                                                                       programmed=self.programmed,
                                                                       tracer=self.traces))
        try:
            server.start()
        except (OSError, ValueError) as exc:
            _log.error("not serving CNI requests (l3net-cni runs in-process instead) path=%s error=%s", path, exc)
            self.health.set_warning("cni-socket", f"CNI socket {path} not served: {exc}")
            return
        self.cni = server

    def _on_config(self, raw: Mapping[str, bytes]) -> None:
        """The datastore's config keys changed: apply what can change live, warn about the rest."""
        self._reconfigure(raw)

    def _after_updates(self, updates: list[Any]) -> None:
        """A batch reached the model: re-read this node's FelixConfiguration resources when one changed
        (and on the first batch, which may delete what a cached view or the start-up read held)."""
        if self.sync is None:
            return
        if self._felix_seen_live and not self.felix_view.concerns(u.key for u in updates):
            return
        self._felix_seen_live = True
        if self.felix_view.update(self.sync.model.resources, self.sync.model.invalid):
            self._reconfigure(self.sync.model.config)

    def _reconfigure(self, raw: Mapping[str, bytes]) -> None:
        """Resolve every parameter again (flags, environment, FelixConfiguration, ``config/`` keys) and apply
        what can change live; a change of any other parameter is logged as needing a restart."""
        legacy = felix_config.with_datastore(self.base_cfg, raw, self.keys, self.node)
        wanted = felixconfig.resolve(legacy, self.felix_view.typed, self.node)
        old = self.cfg
        self.cfg, pending = felixconfig.split_live(old, wanted, felix_config.LIVE_PARAMS)
        changed = sorted(n for n in felix_config.LIVE_PARAMS if getattr(old, n) != getattr(self.cfg, n))
        if changed:
            _log.info("datastore configuration changed params=%s",
                      {n: f"{getattr(self.cfg, n)!r} (from {self.cfg.sources[n]})" for n in changed})
        if pending != self.pending_restart:
            self.pending_restart = pending
            if pending:
                # Not silently ignored: the running agent keeps the value it started with until restarted.
                _log.warning("configuration changes need an agent restart to take effect params=%s",
                             {n: f"{v!r} (from {wanted.sources.get(n)})" for n, v in sorted(pending.items())})
        if "log_level" in changed:
            logging.getLogger().setLevel(self.cfg.log_level)
        if self.sync is not None and set(changed) - {"log_level"}:
            self.sync.set_config(loop_config(self.cfg))
            self.health.liveness_timeout = liveness_timeout(self.cfg)

    async def _start_bgp(self, sync: SyncLoop) -> None:
        """The BGP speaker (ExaBGP, supervised) when BGP is enabled."""
        if not self.cfg.bgp_enabled:
            sync.on_bgp_converged()
            return
        run_dir = Path(self.cfg.run_dir) / self.node / "bgp"
        # on_converged: End-of-RIB from every peer, so stale learned routes are swept then,
        # not only when the startup delay ends.
        self.speaker = bgp.speaker.Speaker(self.node, run_dir, on_learned=sync.on_learned_routes,
                                           on_peers=self._on_peers, python=self.cfg.exabgp_python,
                                           on_converged=sync.on_bgp_converged)
        bgp.metrics.register_into(metrics.REGISTRY)
        await self.speaker.start()
        _log.info("BGP speaker started run_dir=%s", run_dir)
        await self._start_bfd()

    async def _start_bfd(self) -> None:
        """BFD for the BGP peers that enable it; without the BFD ports the agent runs on, BGP timers only."""
        bgp.bfd.metrics.register_into(metrics.REGISTRY)
        bfd = bgp.bfd.peers.BfdPeers(self.node, self.speaker, on_status=self._on_bfd)
        try:
            await bfd.start()
        except OSError as exc:
            _log.error("BFD not running (failures are detected by BGP hold timers only) error=%s", exc)
            self.health.set_warning("bfd", f"BFD ports not bound: {exc}")
            return
        self.bfd = bfd

    def _on_bfd(self, sessions: list[Any]) -> None:
        self.status.put_extra(self.keys.node_status(self.node, "bfd"), bgp.bfd.status.document(self.node, sessions))

    def _on_peers(self, peers: list[Any]) -> None:
        for p in peers:
            metrics.BGP_SESSION_UP.labels(peer=p.name).set(1 if p.state == "up" else 0)
        view = self.speaker.view if self.speaker is not None else None
        bgp.status.keep(self.status, self.keys, self.node, peers, as_number=getattr(view, "as_number", None),
                        router_id=getattr(view, "router_id", None),
                        errors=[str(e) for e in getattr(view, "errors", ())])


def loop_config(cfg: AgentConfig) -> LoopConfig:
    return LoopConfig(min_interval=cfg.apply_min_interval, burst=cfg.apply_burst,
                      refresh_interval=min(cfg.route_refresh_interval, cfg.apply_max_interval),
                      startup_sweep_delay=cfg.startup_sweep_delay, max_failures=cfg.apply_max_failures)


def liveness_timeout(cfg: AgentConfig) -> float:
    """The loop ticks at least once per refresh interval; three missed ticks mean it is stuck."""
    return max(60.0, 3 * min(cfg.route_refresh_interval, cfg.apply_max_interval))


def run(base: AgentConfig) -> int:
    """Start the agent in this process (blocks); returns the exit code.

    ``base`` is the configuration from flags, environment and defaults; this node's
    FelixConfiguration resources and the datastore's ``config/`` keys are layered under
    it once here (bounded wait: an unreachable etcd means starting without them) and
    again whenever they change (:mod:`felix.felixconfig` has the precedence).
    """
    logging.getLogger().setLevel(base.log_level)
    # `kill -USR2 <pid>` dumps every thread's stack to stderr: diagnostics for a stuck agent.
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    ds = connect_from_env(base.etcd_endpoints, base.etcd_ca_cert_file or None, base.etcd_cert_file or None,
                          base.etcd_key_file or None)
    keys = KeyLayout(base.etcd_prefix)
    cache = view_cache(base, keys)
    initial = cache.load() if cache is not None else None
    # With a cached view, one quick attempt: a down datastore must not delay the autonomous start.
    raw = felix_config.read_datastore_config(ds, keys, attempts=1 if initial is not None else 3)
    if not raw and initial is not None:
        raw = config_from_view(initial, felix_config.config_prefix(keys))
    felix_raw = felixconfig.read_felix_configurations(ds, keys)
    if not felix_raw and initial is not None:
        felix_raw = config_from_view(initial, keys.resource_dir(felixconfig.PLURAL))
    felix_view = FelixConfigView(keys, base.node)
    felix_view.load_raw(felix_raw)
    cfg = felixconfig.resolve(felix_config.with_datastore(base, raw, keys, base.node), felix_view.typed, base.node)
    logging.getLogger().setLevel(cfg.log_level)
    _log.info("agent configuration %s sources=%s", cfg.redacted(),
              {k: v for k, v in cfg.sources.items() if v != "default"})
    health = HealthState(liveness_timeout=liveness_timeout(cfg))
    if cfg.metrics_enabled:
        from prometheus_client import start_http_server

        start_http_server(cfg.metrics_port, cfg.metrics_host, registry=metrics.REGISTRY)
        _log.info("metrics listening host=%s port=%d", cfg.metrics_host, cfg.metrics_port)
    server = None
    traces = TraceBook()
    agent: list[Agent] = []  # the agent once built: /debug/config shows its live settings
    if cfg.health_enabled:
        server = HealthServer(health, cfg.health_host, cfg.health_port, extra={
            TRACES_PATH: traces.snapshot,
            CONFIG_PATH: lambda: (config_report(agent[0].cfg, agent[0].pending_restart) if agent
                                  else config_report(cfg))})
        server.start()
        _log.info("health listening host=%s port=%d", cfg.health_host, cfg.health_port)
    node_ip = resolve_node_ip(cfg)
    try:
        agent.append(Agent(cfg, ds, node_ip, health, base_cfg=base, cache=cache, initial_view=initial,
                           traces=traces, felix_view=felix_view))
        return asyncio.run(agent[0].run())
    finally:
        if server is not None:
            server.stop()
        ds.close()

"""felix.main: the composition root of the node agent.

config → datastore → syncer → calculation → sync loop → drivers, plus the
health and metrics endpoints, the node's own registration, its leased status
key and (when those packages are present and enabled) the BGP speaker and the
policy drivers. Crash-only: a fatal error in any part ends the process with a
diagnostic; a restarted agent adopts the kernel state it finds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import faulthandler
import importlib
import inspect
import logging
import signal
import threading
from typing import Any

from felix.calc import Builder, Link, Model
from felix.config import AgentConfig
from felix.dataplane import Dataplane
from felix.desired import DesiredState
from felix.drivers.interfaces import InterfaceDriver, LinkWatcher, ProcSysctls
from felix.drivers.routes import PyrouteNetlink, RouteDriver
from felix.health import HealthServer, HealthState
from felix.loop import FatalApplyError, LoopConfig, SyncLoop, ThreadSafeSink
from felix.registration import StatusPublisher, ensure_default_pool, register_node
from l3net import metrics
from l3net.datastore import connect_from_env
from l3net.datastore.base import Datastore
from l3net.errors import DatastoreError
from l3net.keys import KeyLayout
from l3net.syncer import Syncer

_log = logging.getLogger(__name__)

SYNCER_RETRY_MAX = 1.0


def _optional(module: str) -> Any:
    """Import a module another engineer owns, or None while it does not exist yet."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            return None
        raise


def bgp_builder() -> Builder | None:
    config = _optional("bgp.config")
    if config is None or not hasattr(config, "build_node_view"):
        return None

    def build(model: Model, node: str) -> Any:
        return config.build_node_view(node, model.resources_of("Node"), model.resources_of("BGPConfiguration"),
                                      model.resources_of("BGPPeer"))
    return build


def policy_builder() -> Builder | None:
    """NetworkPolicy → iptables/ipsets program (``policy.compiler``), when present."""
    compiler = _optional("policy.compiler")
    if compiler is None or not hasattr(compiler, "compile_policy"):
        return None

    def build(model: Model, node: str) -> Any:
        local = [w.resource for w in model.workloads.values() if w.node == node]
        return compiler.compile_policy(local, [w.resource for w in model.workloads.values()],
                                       model.resources_of("NetworkPolicy"), model.resources_of("Namespace"))
    return build


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


class Agent:
    """Wires and runs everything on one asyncio loop; :meth:`run` returns the exit code."""

    def __init__(self, cfg: AgentConfig, ds: Datastore, node_ip: str | None, health: HealthState) -> None:
        self.cfg = cfg
        self.ds = ds
        self.keys = KeyLayout(cfg.etcd_prefix)
        self.node = cfg.node
        self.node_ip = node_ip
        self.health = health
        self.io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="l3net-kernel")
        self.status = StatusPublisher(ds, self.keys, self.node, ttl=cfg.status_ttl)
        self.fatal: BaseException | None = None
        self.sync: SyncLoop | None = None
        self.speaker: Any = None
        self._stop_registration = threading.Event()

    # -- background registration (retried while the datastore is down) ----------
    def _register_forever(self) -> None:
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

    def _on_applied(self, desired: DesiredState) -> None:
        metrics.BGP_ADVERTISEMENTS.set(len(desired.advertisements))
        if self.speaker is not None:
            view = desired.bgp_view
            if view is not None and view.local_addresses:
                self.speaker.set_view(view)
                if not view.peers:
                    self.sync.on_bgp_converged()  # type: ignore[union-attr]  # nothing to wait for
            self.speaker.set_advertisements({a.prefix: None for a in desired.advertisements})
        ready, reasons = self.health.readiness()
        self.status.update(ready=ready, notReady=reasons, routes=len(desired.routes),
                           localEndpoints=desired.local_endpoints, address=self.node_ip)

    def _die(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        if self.sync is not None:
            self.sync.stop()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        routes_nl = await loop.run_in_executor(self.io, PyrouteNetlink)
        ipsets = iptables = None
        if self.cfg.policy_enabled:
            ipsets_mod = _optional("felix.drivers.ipsets")
            iptables_mod = _optional("felix.drivers.iptables")
            if ipsets_mod is not None and iptables_mod is not None:
                ipsets, iptables = ipsets_mod.IpsetDriver(), iptables_mod.IptablesDriver()
            else:
                _log.warning("policy drivers not in this build: NetworkPolicy is not enforced")
        dataplane = Dataplane(RouteDriver(routes_nl), InterfaceDriver(ProcSysctls()), ipsets=ipsets,
                              iptables=iptables)
        cfg = self.cfg
        loop_cfg = LoopConfig(min_interval=cfg.apply_min_interval,
                              refresh_interval=min(cfg.route_refresh_interval, cfg.apply_max_interval),
                              startup_sweep_delay=cfg.startup_sweep_delay, max_failures=cfg.apply_max_failures)
        node_ips = [self.node_ip.split("/")[0]] if self.node_ip else []
        self.sync = sync = SyncLoop(Model(self.keys), self.node, dataplane, config=loop_cfg, health=self.health,
                                    node_ips=node_ips, bgp_builder=bgp_builder() if cfg.bgp_enabled else None,
                                    policy_builder=policy_builder() if iptables is not None else None,
                                    on_applied=self._on_applied, io_executor=self.io)

        def on_links(links: dict[str, Link]) -> None:
            loop.call_soon_threadsafe(sync.on_links, links)

        watcher = LinkWatcher(on_links, on_error=lambda e: loop.call_soon_threadsafe(self._die, e))
        sync.on_links(await loop.run_in_executor(None, watcher.start))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, sync.stop)

        threading.Thread(target=self._register_forever, name="l3net-register", daemon=True).start()
        self.status.start()
        await self._start_bgp(sync)

        # Retries capped at 1 s: after an outage the agent must catch up within seconds of etcd's return.
        syncer = Syncer(self.ds, self.keys.prefix, ThreadSafeSink(sync, loop), retry_initial=0.1,
                        retry_max=SYNCER_RETRY_MAX, on_fatal=lambda e: loop.call_soon_threadsafe(self._die, e))
        syncer.start()
        _log.info("agent started node=%s address=%s prefix=%s", self.node, self.node_ip, self.keys.prefix)
        code = 0
        try:
            await sync.run()
        except FatalApplyError as exc:
            _log.critical("agent exiting: %s", exc)
            code = 2
        finally:
            self._stop_registration.set()
            # Not awaited: cancelling a watch that another thread is reading can block in the
            # etcd client (l3net.datastore.etcd), and a process on its way out need not wait.
            threading.Thread(target=syncer.stop, name="l3net-syncer-stop", daemon=True).start()
            watcher.stop()
            if self.speaker is not None:
                await self.speaker.stop()
            self.status.stop()
            self.io.shutdown(wait=False)
        if self.fatal is not None:
            _log.critical("agent exiting after a fatal error in a helper thread: %r", self.fatal)
            code = code or 2
        return code

    async def _start_bgp(self, sync: SyncLoop) -> None:
        """The BGP speaker (ExaBGP, supervised) when bgp.speaker exists and BGP is enabled."""
        if not self.cfg.bgp_enabled:
            sync.on_bgp_converged()
            return
        speaker_mod = _optional("bgp.speaker")
        if speaker_mod is None:
            _log.info("BGP speaker not available in this build; routes are programmed without BGP")
            sync.on_bgp_converged()
            return
        from pathlib import Path

        run_dir = Path(self.cfg.run_dir) / self.node / "bgp"
        kwargs: dict[str, Any] = {"on_learned": sync.on_learned_routes, "on_peers": self._on_peers,
                                  "python": self.cfg.exabgp_python}
        if "on_converged" in inspect.signature(speaker_mod.Speaker).parameters:
            # End-of-RIB from every peer: stale learned routes may be swept before the startup delay ends.
            kwargs["on_converged"] = sync.on_bgp_converged
        self.speaker = speaker_mod.Speaker(self.node, run_dir, **kwargs)
        bgp_metrics = _optional("bgp.metrics")
        if bgp_metrics is not None and hasattr(bgp_metrics, "register_into"):
            bgp_metrics.register_into(metrics.REGISTRY)
        await self.speaker.start()
        _log.info("BGP speaker started run_dir=%s", run_dir)

    def _on_peers(self, peers: list[Any]) -> None:
        for p in peers:
            metrics.BGP_SESSION_UP.labels(peer=p.name).set(1 if p.state == "up" else 0)
        view = self.speaker.view if self.speaker is not None else None
        bgp_status = _optional("bgp.status")
        if bgp_status is not None:
            self.status.put_extra(self.keys.node_status(self.node, "bgp"), bgp_status.encode(
                self.node, peers, as_number=getattr(view, "as_number", None),
                router_id=getattr(view, "router_id", None)))


def run(cfg: AgentConfig) -> int:
    """Start the agent in this process (blocks); returns the exit code."""
    logging.getLogger().setLevel(cfg.log_level)
    # `kill -USR2 <pid>` dumps every thread's stack to stderr: diagnostics for a stuck agent.
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    _log.info("agent configuration %s", {k: v for k, v in cfg.redacted().items()})
    ds = connect_from_env(cfg.etcd_endpoints, cfg.etcd_ca_cert_file or None, cfg.etcd_cert_file or None,
                          cfg.etcd_key_file or None)
    health = HealthState(liveness_timeout=max(60.0, 3 * min(cfg.route_refresh_interval, cfg.apply_max_interval)))
    if cfg.metrics_enabled:
        from prometheus_client import start_http_server

        start_http_server(cfg.metrics_port, cfg.metrics_host, registry=metrics.REGISTRY)
        _log.info("metrics listening host=%s port=%d", cfg.metrics_host, cfg.metrics_port)
    server = None
    if cfg.health_enabled:
        server = HealthServer(health, cfg.health_host, cfg.health_port)
        server.start()
        _log.info("health listening host=%s port=%d", cfg.health_host, cfg.health_port)
    node_ip = resolve_node_ip(cfg)
    try:
        return asyncio.run(Agent(cfg, ds, node_ip, health).run())
    finally:
        if server is not None:
            server.stop()
        ds.close()

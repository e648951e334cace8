"""felix.config: every agent parameter in one declarative table.

Each parameter has a name, a parser, a default and a help text; it is read from
the ``--flag`` of the same name, else from the environment variable
``L3NET_<NAME>``, else the default. A value from a flag or the environment that
does not parse is a :class:`ConfigError` naming the parameter, its source and
the reason; the agent refuses to start with it.

Parameters marked ``datastore=True`` can also be set in etcd (Calico's v1
layout idea; the legacy form, below Calico's FelixConfiguration resources, which
:mod:`felix.felixconfig` layers on top), one string value per key::

    <prefix>config/global/<Name>          every node
    <prefix>config/node/<node>/<Name>     one node (beats global)

``<Name>`` is the parameter's name in CamelCase (``route_refresh_interval`` ->
``RouteRefreshInterval``). Precedence: flag > environment > FelixConfiguration
``node.<node>`` > FelixConfiguration ``default`` > node key > global key >
default. A datastore value that does not parse is logged with its key and
ignored (the next source applies): bad data is absence. The agent reads these
keys once at start and again whenever they change (they come with its datastore
feed); :data:`LIVE_PARAMS` take effect on the next apply, the others are logged
as needing a restart.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from l3net.constants import DEFAULT_ETCD_PREFIX, HEALTH_PORT, METRICS_PORT
from l3net.datastore.base import Datastore
from l3net.errors import DatastoreError
from l3net.keys import KeyLayout
from l3net.model.values import parse_asn_text, parse_duration

_log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A parameter that does not parse: names the parameter, where it came from and why."""


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


# A bare number of seconds ("90", "0.05"); anything else is a Go duration ("90s", "1m30s", "250ms").
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def parse_seconds(text: str) -> float:
    """Seconds, as a bare number or a Go duration (the one parser the BGP resources use, too)."""
    text = text.strip()
    if text.startswith("-"):
        raise ValueError("must not be negative")
    if _SECONDS.fullmatch(text):
        return float(text)
    return parse_duration(text)


def parse_positive_seconds(text: str) -> float:
    value = parse_seconds(text)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def parse_port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError("must be 0..65535")
    return port


def parse_asn(text: str) -> int | None:
    """``64512`` or AS-dot ``1.10``; empty means the cluster's."""
    return parse_asn_text(text.strip()) if text.strip() else None


def parse_node_ip(text: str) -> str:
    """``autodetect``, ``none`` or ``a.b.c.d/len``."""
    if text in ("autodetect", "none"):
        return text
    iface = ipaddress.ip_interface(text)
    if iface.version != 4 or "/" not in text:
        raise ValueError("expected autodetect, none or an IPv4 address with its prefix length (10.0.0.1/24)")
    return str(iface)


def parse_autodetect(text: str) -> str:
    from felix.nodeip import parse_method

    parse_method(text)
    return text


def parse_cidr_or_empty(text: str) -> str:
    return str(ipaddress.ip_network(text)) if text else ""


def parse_count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def parse_iptables_backend(text: str) -> str:
    low = text.lower()
    if low not in ("auto", "nft", "legacy"):
        raise ValueError("expected auto, nft or legacy")
    return low


def parse_log_level(text: str) -> str:
    up = text.upper()
    if up not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return up


# Calico's FailsafeInboundHostPorts default (felix/config/config_params.go).
CALICO_FAILSAFE_INBOUND = "tcp:22, udp:68, tcp:179, tcp:2379, tcp:2380, tcp:5473, tcp:6443, tcp:6666, tcp:6667"
# ... and its FailsafeOutboundHostPorts default.
CALICO_FAILSAFE_OUTBOUND = "udp:53, udp:67, tcp:179, tcp:2379, tcp:2380, tcp:5473, tcp:6443, tcp:6666, tcp:6667"


def parse_endpoint_to_host_action(text: str) -> str:
    """Calico's DefaultEndpointToHostAction: Drop, Accept or Return (case as Calico writes it)."""
    for action in ("Drop", "Accept", "Return"):
        if text.strip().lower() == action.lower():
            return action
    raise ValueError(f"expected Drop, Accept or Return, got {text!r}")


def parse_failsafe_ports(text: str) -> tuple[tuple[str, int], ...]:
    """``proto:port`` items, comma separated (``tcp:22, udp:68``); proto tcp, udp or sctp; empty: none."""
    out: list[tuple[str, int]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        proto, sep, port = item.partition(":")
        proto = proto.strip().lower()
        if not sep or proto not in ("tcp", "udp", "sctp") or not port.strip().isdigit() \
                or len(port.strip()) > 5 or not 1 <= int(port) <= 65535:
            raise ValueError(f"{item!r} is not <tcp|udp|sctp>:<port 1..65535>")
        if (proto, int(port)) not in out:
            out.append((proto, int(port)))
    return tuple(out)


@dataclass(frozen=True)
class Param:
    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    datastore: bool = False  # may also come from the datastore's config/ keys

    @property
    def env(self) -> str:
        return "L3NET_" + self.name.upper()

    @property
    def datastore_name(self) -> str:
        """The key name under ``config/global/`` and ``config/node/<node>/``: CamelCase."""
        return "".join(part.capitalize() for part in self.name.split("_"))

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


PARAMS: tuple[Param, ...] = (
    Param("node", str, socket.gethostname(), "this node's name (its Node resource and WorkloadEndpoint spec.node)"),
    Param("etcd_endpoints", str, "http://127.0.0.1:2379", "comma list of http://, https:// or unix:// endpoints"),
    Param("etcd_ca_cert_file", str, "", "CA bundle for https endpoints"),
    Param("etcd_cert_file", str, "", "client certificate for https endpoints"),
    Param("etcd_key_file", str, "", "client key for https endpoints"),
    Param("etcd_prefix", str, DEFAULT_ETCD_PREFIX, "key prefix of every l3net key"),
    Param("ip", parse_node_ip, "autodetect", "node IPv4 address with prefix length (10.0.0.1/24), autodetect or none"),
    Param("ip_autodetection_method", parse_autodetect, "first-found",
          "first-found, interface=REGEX, skip-interface=REGEX, cidr=CIDR[,CIDR], can-reach=IP"),
    Param("as_number", parse_asn, None, "this node's AS number (Node spec.bgp.asNumber); default: the cluster's"),
    Param("health_enabled", parse_bool, True, "serve /liveness and /readiness"),
    Param("health_host", str, "127.0.0.1", "bind address of the health endpoints"),
    Param("health_port", parse_port, HEALTH_PORT, "port of the health endpoints"),
    Param("metrics_enabled", parse_bool, True, "serve Prometheus metrics"),
    Param("metrics_host", str, "0.0.0.0", "bind address of the metrics endpoint"),
    Param("metrics_port", parse_port, METRICS_PORT, "port of the metrics endpoint"),
    Param("route_refresh_interval", parse_seconds, 90.0,
          "seconds between full re-reads of routes, iptables and ipsets (heals drift)", datastore=True),
    Param("apply_min_interval", parse_seconds, 0.05,
          "seconds per apply credit: under a stream of events a dataplane side applies at most once per interval",
          datastore=True),
    Param("apply_burst", parse_count, 4,
          ("apply credits a quiet dataplane side holds: that many closely following events are applied at once, "
           "without waiting out apply_min_interval"),
          datastore=True),
    Param("apply_max_interval", parse_seconds, 90.0, "maximum seconds between two dataplane applies", datastore=True),
    Param("apply_max_failures", parse_count, 10,
          ("failed applies in a row of one dataplane side before the log escalates to ERROR with "
           "diagnostics (never an exit: each side retries with backoff)"),
          datastore=True),
    Param("startup_sweep_delay", parse_seconds, 30.0,
          "seconds after start before stale BGP-learned routes are removed (unless BGP converged first)",
          datastore=True),
    Param("status_ttl", int, 30, "TTL (seconds) of the agent's leased status key"),
    Param("bgp_enabled", parse_bool, True, "run the BGP speaker (ExaBGP)", datastore=True),
    Param("bgp_secrets_dir", str, "/etc/l3net/bgp-secrets",
          "directory of mounted Secrets for BGP passwords: secretKeyRef {name, key} is <dir>/<name>/<key>"),
    Param("exabgp_python", str, sys.executable, "the Python interpreter that runs ExaBGP (python -m exabgp)"),
    Param("run_dir", str, "/var/run/l3net", "directory for runtime files (ExaBGP config, bridge socket)"),
    Param("cni_socket", str, "",
          "unix socket on which the agent serves l3net-cni requests (the plugin's fast path); "
          "empty: <run_dir>/cni.sock; none: do not serve"),
    Param("policy_enabled", parse_bool, True, "program NetworkPolicy and GlobalNetworkPolicy (iptables/ipsets)",
          datastore=True),
    Param("default_endpoint_to_host_action", parse_endpoint_to_host_action, "Drop",
          "what happens to traffic from a workload to this node once the workload's egress policy allowed it: "
          "Drop (Calico's default), Accept, or Return (to the host's own INPUT rules)", datastore=True),
    Param("failsafe_inbound_host_ports", parse_failsafe_ports, parse_failsafe_ports(CALICO_FAILSAFE_INBOUND),
          "proto:port list of the node's failsafe inbound ports (Calico's default list): always open on host "
          "endpoints; workloads reach them only with workload_to_host_failsafe", datastore=True),
    Param("failsafe_outbound_host_ports", parse_failsafe_ports, parse_failsafe_ports(CALICO_FAILSAFE_OUTBOUND),
          "proto:port list of the node's failsafe outbound ports (Calico's default list): destination ports "
          "the host may always reach through its host endpoints", datastore=True),
    Param("workload_to_host_failsafe", parse_bool, False,
          "accept workload traffic to the failsafe inbound ports despite a Drop endpoint-to-host action "
          "(off: Calico applies failsafes to host endpoints, never to pods)", datastore=True),
    Param("iptables_backend", parse_iptables_backend, "auto",
          "auto (Felix's detection: kube's hint chains, else the backend with more rules, else nft), nft or legacy"),
    Param("default_ipv4_pool", parse_cidr_or_empty, "",
          "create this IPv4 pool at start if no IPPool exists (empty: never create one)"),
    Param("log_level", parse_log_level, "INFO", "DEBUG, INFO, WARNING or ERROR", datastore=True),
    Param("view_cache_dir", str, "",
          "directory of the last-good-view cache (a restart during a datastore outage starts from it); "
          "empty: <run_dir>/<node>; use persistent storage (e.g. /var/lib/l3net) to survive a reboot"),
    Param("view_cache_max_age", parse_seconds, 86400.0,
          "seconds a cached view may be old and still be used at start; older is refused (0: no cache at all)"),
    Param("datastore_probe_interval", parse_positive_seconds, 1.0,
          "seconds between datastore probes (a hung datastore is reported within about two intervals)"),
    Param("datastore_probe_timeout", parse_positive_seconds, 1.0, "seconds a datastore probe waits for an answer"),
)
PARAMS_BY_NAME = {p.name: p for p in PARAMS}
DATASTORE_PARAMS = frozenset(p.name for p in PARAMS if p.datastore)
# Datastore parameters that change a running agent on its next apply; the others need a restart
# (they decide which parts the agent builds at start: BGP speaker, policy drivers, startup grace).
LIVE_PARAMS = frozenset({"log_level", "route_refresh_interval", "apply_min_interval", "apply_burst",
                         "apply_max_interval",
                         "apply_max_failures", "default_endpoint_to_host_action", "failsafe_inbound_host_ports",
                         "workload_to_host_failsafe"})


class AgentConfig:
    """The resolved parameters; attribute access by name (``cfg.node``). Immutable after load."""

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.sources = dict(sources)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def redacted(self) -> dict[str, Any]:
        """For the startup log: file paths are fine, nothing secret is held here."""
        return self.as_dict()


def add_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per parameter (default None: unset means "use the environment or default")."""
    for p in PARAMS:
        if p.name in skip:
            continue
        parser.add_argument(p.flag, dest=p.name, default=None, metavar=p.name.upper(),
                            help=f"{p.help} (env {p.env}; default {p.default!r})")


def load(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Resolve every parameter: flag, else ``L3NET_<NAME>``, else default."""
    flags = flags or {}
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for p in PARAMS:
        raw, source = flags.get(p.name), p.flag
        if raw is None:
            raw, source = env.get(p.env), p.env
        if raw is None:
            values[p.name], sources[p.name] = p.default, "default"
            continue
        try:
            values[p.name] = p.parse(str(raw))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{p.name} (from {source}): {exc}") from exc
        sources[p.name] = source
    return AgentConfig(values, sources)


# -- the datastore layer --------------------------------------------------------
CONFIG_DIR = "config/"


def config_prefix(keys: KeyLayout) -> str:
    """Every datastore config key starts with this."""
    return f"{keys.prefix}{CONFIG_DIR}"


def config_key(keys: KeyLayout, scope: str, name: str, node: str | None = None) -> str:
    """``<prefix>config/global/<name>`` (scope ``global``) or ``<prefix>config/node/<node>/<name>`` (``node``).

    ``name`` is a parameter's :attr:`Param.datastore_name`. Kept here, not in
    ``l3net.keys``, until a FelixConfiguration-like resource replaces these keys.
    """
    if not name or "/" in name:
        raise ValueError(f"name: {name!r} is not a config parameter name")
    if scope == "global":
        return f"{config_prefix(keys)}global/{name}"
    if scope == "node":
        if not node or "/" in node:
            raise ValueError(f"node: {node!r} is not a node name")
        return f"{config_prefix(keys)}node/{node}/{name}"
    raise ValueError(f"scope: {scope!r} is not global or node")


def with_datastore(base: AgentConfig, raw: Mapping[str, bytes], keys: KeyLayout, node: str) -> AgentConfig:
    """``base`` (flags, environment, defaults) with the datastore's values for parameters still at their default.

    ``raw`` maps full keys to stored values (other keys are ignored). Pure apart
    from logging: a value that does not parse is logged with its key and skipped.
    """
    values = base.as_dict()
    sources = dict(base.sources)
    known = set()
    for p in PARAMS:
        if not p.datastore:
            continue
        scoped = (config_key(keys, "node", p.datastore_name, node), config_key(keys, "global", p.datastore_name))
        known.update(scoped)
        if base.sources.get(p.name, "default") != "default":
            continue  # a flag or the environment wins
        for key in scoped:
            if key not in raw:
                continue
            try:
                values[p.name] = p.parse(raw[key].decode().strip())
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                _log.warning("invalid datastore config value, ignored key=%s value=%r error=%s", key,
                             raw[key][:100], exc)
                continue
            sources[p.name] = f"datastore {key}"
            break
    node_dir = f"{config_prefix(keys)}node/"
    for key in sorted(raw):
        if key in known or not key.startswith(config_prefix(keys)):
            continue
        if key.startswith(node_dir) and not key.startswith(f"{node_dir}{node}/"):
            continue  # another node's setting
        _log.warning("unknown datastore config key ignored key=%s (settable: %s)", key,
                     sorted(PARAMS_BY_NAME[n].datastore_name for n in DATASTORE_PARAMS))
    return AgentConfig(values, sources)


def read_datastore_config(ds: Datastore, keys: KeyLayout, *, attempts: int = 3, delay: float = 0.5,
                          sleep: Callable[[float], None] = time.sleep) -> dict[str, bytes]:
    """Every key under ``config/``, read at start. After ``attempts`` failures (etcd unreachable) returns {}
    with a warning: the agent starts on flags, environment and defaults, and applies the datastore's
    values when its feed delivers them."""
    for attempt in range(1, attempts + 1):
        try:
            kvs, _ = ds.list(config_prefix(keys))
            return {kv.key: kv.value for kv in kvs}
        except DatastoreError as exc:
            if attempt == attempts:
                _log.warning("datastore config not read, starting without it error=%s", exc)
                return {}
            sleep(delay)
    return {}

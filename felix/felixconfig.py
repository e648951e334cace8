"""felix.felixconfig: Calico's FelixConfiguration resources (``default``, ``node.<node>``) as agent settings.

Owns the map from FelixConfiguration fields to agent parameters (:data:`FIELDS`; the model's
validator refuses every other field) and Calico's precedence between them: a parameter takes
the first of its flag, its ``L3NET_*`` environment variable, ``node.<node>``, ``default``, the
legacy ``config/`` keys (:func:`felix.config.with_datastore`) and its default. That is Calico's
order (environment and config file, then the host's resource, then the global one), with l3net's
flags standing for Felix's config file.

:func:`resolve` is pure. :class:`FelixConfigView` holds the last good spec of each of this node's
two resources: a resource that failed validation in the datastore (written past l3netctl) is
logged and its previous values are kept (bad data never resets the agent to its defaults).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from felix.config import AgentConfig
from l3net.datastore.base import Datastore
from l3net.errors import DatastoreError
from l3net.keys import KeyLayout
from l3net.model.decode import Invalid, decode
from l3net.model.resource import Resource
from l3net.model.values import parse_duration

_log = logging.getLogger(__name__)

__all__ = ["FIELDS", "PLURAL", "FelixConfigView", "Field", "read_felix_configurations", "resolve", "scope_names",
           "split_live"]

PLURAL = "felixconfigurations"

# Calico's log levels (validated, canonical case) -> Python's: Trace is Debug, Fatal is Critical.
_LOG_LEVELS = {"Trace": "DEBUG", "Debug": "DEBUG", "Info": "INFO", "Warning": "WARNING", "Error": "ERROR",
               "Fatal": "CRITICAL"}


@dataclass(frozen=True)
class Field:
    """One FelixConfiguration field: the agent parameter it sets and how a validated value converts."""

    param: str
    convert: Callable[[Any], Any]


def _failsafe(items: list[dict[str, Any]]) -> tuple[tuple[str, int], ...]:
    """``[{protocol: TCP, port: 22}]`` -> ``(("tcp", 22),)``; Calico's protocol defaults to TCP."""
    out: list[tuple[str, int]] = []
    for item in items:
        entry = (str(item.get("protocol", "TCP")).lower(), int(item["port"]))
        if entry not in out:
            out.append(entry)
    return tuple(out)


FIELDS: dict[str, Field] = {
    "logSeverityScreen": Field("log_level", lambda v: _LOG_LEVELS[v]),
    "routeRefreshInterval": Field("route_refresh_interval", parse_duration),
    "healthEnabled": Field("health_enabled", bool),
    "healthHost": Field("health_host", str),
    "healthPort": Field("health_port", int),
    "prometheusMetricsEnabled": Field("metrics_enabled", bool),
    "prometheusMetricsHost": Field("metrics_host", str),
    "prometheusMetricsPort": Field("metrics_port", int),
    "defaultEndpointToHostAction": Field("default_endpoint_to_host_action", str),
    "failsafeInboundHostPorts": Field("failsafe_inbound_host_ports", _failsafe),
    "failsafeOutboundHostPorts": Field("failsafe_outbound_host_ports", _failsafe),
    "iptablesBackend": Field("iptables_backend", lambda v: str(v).lower()),
    # The status key's lease: Calico's TTL of its status reports, in whole seconds.
    "reportingTTL": Field("status_ttl", lambda v: math.ceil(parse_duration(v))),
}


def scope_names(node: str) -> tuple[str, str]:
    """The resources one node reads, strongest first."""
    return (f"node.{node}", "default")


def _overridable(source: str) -> bool:
    """A flag or the environment beats every FelixConfiguration; a default or a legacy key does not."""
    return source == "default" or source.startswith("datastore ")


def resolve(base: AgentConfig, specs: Mapping[str, Mapping[str, Any]], node: str) -> AgentConfig:
    """``base`` with the values of ``specs`` (resource name -> validated spec) for this node.

    Pure apart from logging: a value that does not convert (it passed validation, so only a bug
    gets here) is logged and skipped, and the next source applies.
    """
    values = base.as_dict()
    sources = dict(base.sources)
    for field_name, f in FIELDS.items():
        if not _overridable(base.sources.get(f.param, "default")):
            continue
        for name in scope_names(node):
            spec = specs.get(name)
            if spec is None or field_name not in spec:
                continue
            try:
                values[f.param] = f.convert(spec[field_name])
            except (ValueError, TypeError, KeyError) as exc:
                _log.warning("FelixConfiguration value not taken resource=%s field=%s error=%s", name, field_name, exc)
                continue
            sources[f.param] = f"FelixConfiguration {name}"
            break
    return AgentConfig(values, sources)


def split_live(old: AgentConfig, wanted: AgentConfig, live: Iterable[str]) -> tuple[AgentConfig, dict[str, Any]]:
    """The configuration in effect after a change, and the wanted values still waiting for a restart.

    ``live`` parameters take their ``wanted`` value; every other parameter keeps ``old``'s (the
    running agent built its parts from it), and a differing wanted value is returned as pending.
    """
    live = frozenset(live)
    values, sources = old.as_dict(), dict(old.sources)
    pending: dict[str, Any] = {}
    for name, value in wanted.as_dict().items():
        if name in live:
            values[name], sources[name] = value, wanted.sources.get(name, "default")
        elif value != values.get(name):
            pending[name] = value
    return AgentConfig(values, sources), pending


def read_felix_configurations(ds: Datastore, keys: KeyLayout) -> dict[str, bytes]:
    """The stored FelixConfiguration keys, read once at start; {} (with a warning) when etcd cannot be read."""
    try:
        kvs, _ = ds.list(keys.resource_dir(PLURAL))
    except DatastoreError as exc:
        _log.warning("FelixConfiguration not read at start error=%s", exc)
        return {}
    return {kv.key: kv.value for kv in kvs}


class FelixConfigView:
    """This node's two FelixConfiguration specs (``default``, ``node.<node>``), the last good one of each.

    Owns nothing outside itself; runs on the agent's event loop (or once at start, before it);
    idempotent: the same input twice changes nothing. Never raises for bad data.
    """

    def __init__(self, keys: KeyLayout, node: str) -> None:
        self.keys = keys
        self.node = node
        self.prefix = keys.resource_dir(PLURAL)
        self.specs: dict[str, dict[str, Any]] = {}

    def _key(self, name: str) -> str:
        return self.keys.resource(PLURAL, name)

    def concerns(self, keys: Iterable[str]) -> bool:
        """Whether any of ``keys`` is one of this node's two resources."""
        mine = {self._key(n) for n in scope_names(self.node)}
        return any(k in mine for k in keys)

    def update(self, resources: Mapping[str, Resource], invalid: Mapping[str, str]) -> bool:
        """Take the current resources (the model's, by key) and invalid keys; True when a spec changed."""
        new: dict[str, dict[str, Any]] = {}
        for name in scope_names(self.node):
            key = self._key(name)
            res = resources.get(key)
            if res is not None and res.kind == "FelixConfiguration":
                new[name] = dict(res.spec)
            elif key in invalid:
                kept = self.specs.get(name)
                _log.warning("invalid FelixConfiguration in the datastore, %s resource=%s error=%s",
                             "keeping its previous values" if kept is not None else "skipped", name, invalid[key])
                if kept is not None:
                    new[name] = kept
        changed = new != self.specs
        self.specs = new
        return changed

    def load_raw(self, raw: Mapping[str, bytes]) -> None:
        """Seed from stored keys read at start (bad ones logged and skipped, as :meth:`update` does)."""
        resources: dict[str, Resource] = {}
        invalid: dict[str, str] = {}
        for key, value in raw.items():
            out = decode(self.keys, key, value)
            if isinstance(out, Invalid):
                invalid[key] = str(out)
            else:
                resources[key] = out
        self.update(resources, invalid)

"""felix.felixconfig: Calico's FelixConfiguration resources (``default``, ``node.<node>``) as agent settings.

Owns the map from FelixConfiguration fields to agent parameters (:data:`FIELDS`; the model's validator refuses
every other field) and Calico's precedence between them. It reads the model's typed spec
(:mod:`l3net.model.felixconfiguration_spec`: durations in seconds, canonical enums, re-serialised addresses)
and maps those values to the agent's (a Calico log level to Python's, a duration to whole seconds where the
parameter wants them); it parses no raw field value itself. The precedence: a parameter takes the first of its
flag, its ``L3NET_*`` environment variable, ``node.<node>``, ``default``, the legacy ``config/`` keys
(:func:`felix.config.with_datastore`) and its default. That is Calico's order (environment and config file,
then the host's resource, then the global one), with l3net's flags standing for Felix's config file.

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
from l3net.model.felixconfiguration_spec import FailsafePort, FelixConfigurationSpec, felixconfiguration_spec
from l3net.model.resource import Resource

_log = logging.getLogger(__name__)

__all__ = ["FIELDS", "PLURAL", "FelixConfigView", "Field", "read_felix_configurations", "resolve", "scope_names",
           "split_live"]

PLURAL = "felixconfigurations"

# Calico's log levels (validated, canonical case) -> Python's: Trace is Debug, Fatal is Critical.
_LOG_LEVELS = {"Trace": "DEBUG", "Debug": "DEBUG", "Info": "INFO", "Warning": "WARNING", "Error": "ERROR",
               "Fatal": "CRITICAL"}


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Field:
    """One FelixConfiguration field: the agent parameter it sets, the attribute of the model's typed spec
    (:class:`~l3net.model.felixconfiguration_spec.FelixConfigurationSpec`) it reads, and how that typed value
    maps to the parameter's (never a parse: the model parsed it)."""

    param: str
    attr: str
    convert: Callable[[Any], Any] = _same


def _failsafe(ports: tuple[FailsafePort, ...]) -> tuple[tuple[str, int], ...]:
    """``(FailsafePort("TCP", 22),)`` -> ``(("tcp", 22),)``, the agent's form, each entry once."""
    out: list[tuple[str, int]] = []
    for p in ports:
        entry = (p.protocol.lower(), p.port)
        if entry not in out:
            out.append(entry)
    return tuple(out)


FIELDS: dict[str, Field] = {
    "logSeverityScreen": Field("log_level", "log_severity_screen", lambda v: _LOG_LEVELS[v]),
    "routeRefreshInterval": Field("route_refresh_interval", "route_refresh_interval"),
    "healthEnabled": Field("health_enabled", "health_enabled"),
    "healthHost": Field("health_host", "health_host"),
    "healthPort": Field("health_port", "health_port"),
    "prometheusMetricsEnabled": Field("metrics_enabled", "prometheus_metrics_enabled"),
    "prometheusMetricsHost": Field("metrics_host", "prometheus_metrics_host"),
    "prometheusMetricsPort": Field("metrics_port", "prometheus_metrics_port"),
    "defaultEndpointToHostAction": Field("default_endpoint_to_host_action", "default_endpoint_to_host_action"),
    "failsafeInboundHostPorts": Field("failsafe_inbound_host_ports", "failsafe_inbound_host_ports", _failsafe),
    "failsafeOutboundHostPorts": Field("failsafe_outbound_host_ports", "failsafe_outbound_host_ports", _failsafe),
    "iptablesBackend": Field("iptables_backend", "iptables_backend", str.lower),
    # The status key's lease: Calico's TTL of its status reports, in whole seconds.
    "reportingTTL": Field("status_ttl", "reporting_ttl", math.ceil),
}


def scope_names(node: str) -> tuple[str, str]:
    """The resources one node reads, strongest first."""
    return (f"node.{node}", "default")


def _overridable(source: str) -> bool:
    """A flag or the environment beats every FelixConfiguration; a default or a legacy key does not."""
    return source == "default" or source.startswith("datastore ")


Spec = FelixConfigurationSpec | Mapping[str, Any]


def resolve(base: AgentConfig, specs: Mapping[str, Spec], node: str) -> AgentConfig:
    """``base`` with the values of ``specs`` (resource name -> typed spec, or the validated spec) for this node.

    Pure apart from logging. A spec given as a mapping is typed by the model
    (:func:`~l3net.model.felixconfiguration_spec.felixconfiguration_spec`); one the model refuses (it passed
    validation, so only a bug gets here) is logged and skipped, and the next source applies.
    """
    typed = {name: t for name in scope_names(node) if (t := _typed(name, specs.get(name))) is not None}
    values = base.as_dict()
    sources = dict(base.sources)
    for f in FIELDS.values():
        if not _overridable(base.sources.get(f.param, "default")):
            continue
        for name, spec in typed.items():   # strongest first
            value = getattr(spec, f.attr)
            if value is None:
                continue
            values[f.param] = f.convert(value)
            sources[f.param] = f"FelixConfiguration {name}"
            break
    return AgentConfig(values, sources)


def _typed(name: str, spec: Spec | None) -> FelixConfigurationSpec | None:
    """The typed spec of one resource; None when absent or refused by the model (logged)."""
    if spec is None or isinstance(spec, FelixConfigurationSpec):
        return spec
    try:
        return felixconfiguration_spec(Resource(kind="FelixConfiguration", name=name, spec=dict(spec)))
    except ValueError as exc:   # the model's ValidationError (or a spec that is not a document)
        _log.warning("FelixConfiguration not taken resource=%s error=%s", name, exc)
        return None


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

    ``specs`` holds each validated spec (name -> dict), ``typed`` its typed spec (name -> the model's
    :class:`~l3net.model.felixconfiguration_spec.FelixConfigurationSpec`, computed from the Resource, never
    re-parsed); :func:`resolve` takes either. Owns nothing outside itself; runs on the agent's event loop (or
    once at start, before it); idempotent: the same input twice changes nothing. Never raises for bad data.
    """

    def __init__(self, keys: KeyLayout, node: str) -> None:
        self.keys = keys
        self.node = node
        self.prefix = keys.resource_dir(PLURAL)
        self.specs: dict[str, dict[str, Any]] = {}
        self.typed: dict[str, FelixConfigurationSpec] = {}

    def _key(self, name: str) -> str:
        return self.keys.resource(PLURAL, name)

    def concerns(self, keys: Iterable[str]) -> bool:
        """Whether any of ``keys`` is one of this node's two resources."""
        mine = {self._key(n) for n in scope_names(self.node)}
        return any(k in mine for k in keys)

    def update(self, resources: Mapping[str, Resource], invalid: Mapping[str, str]) -> bool:
        """Take the current resources (the model's, by key) and invalid keys; True when a spec changed.

        A Resource the model did not validate (built by hand) and that it refuses counts as invalid."""
        new: dict[str, dict[str, Any]] = {}
        typed: dict[str, FelixConfigurationSpec] = {}
        for name in scope_names(self.node):
            key = self._key(name)
            res = resources.get(key)
            error = invalid.get(key)
            if res is not None and res.kind == "FelixConfiguration":
                try:
                    typed[name] = felixconfiguration_spec(res)
                except ValueError as exc:   # the model's ValidationError, for a hand-built Resource
                    error = str(exc)
                else:
                    new[name] = dict(res.spec)
                    continue
            if error is not None:
                kept = self.specs.get(name)
                _log.warning("invalid FelixConfiguration in the datastore, %s resource=%s error=%s",
                             "keeping its previous values" if kept is not None else "skipped", name, error)
                if kept is not None:
                    new[name], typed[name] = kept, self.typed[name]
        changed = new != self.specs
        self.specs, self.typed = new, typed
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

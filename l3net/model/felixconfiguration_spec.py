"""l3net.model.felixconfiguration_spec: a FelixConfiguration's typed spec, the one parse of the agent's settings.

The model validates a FelixConfiguration once (:mod:`l3net.model.validate.felix_configuration`): enums in their
canonical case, durations as Go durations (``routeRefreshInterval`` above 0, ``reportingTTL`` at least 5s), bind
addresses as IP addresses, ports in 1..65535, failsafe ports with an optional protocol, and every field l3net has
no setting for refused. This module turns that validated spec into a frozen value: durations as float seconds (by
the model's one parser, :func:`l3net.model.values.parse_duration`), addresses re-serialised, failsafe ports as
:class:`FailsafePort` with Calico's default protocol TCP. The agent (``felix.felixconfig``) maps these values to
its parameters and parses nothing itself.

An absent field is None (so a ``node.<node>`` resource that leaves a field out lets ``default`` supply it); the
refused fields the model accepts at their no-op value carry nothing and have no attribute. A Resource built by
hand is validated first, and refused with the model's own :class:`~l3net.errors.ValidationError`.

Cheap to call repeatedly: computed once per Resource object and kept on it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from l3net.model.resource import Resource
from l3net.model.typed import typed_once
from l3net.model.values import parse_duration

__all__ = ["FailsafePort", "FelixConfigurationSpec", "felixconfiguration_spec"]


@dataclass(frozen=True, slots=True)
class FailsafePort:
    """One ``failsafeInboundHostPorts``/``failsafeOutboundHostPorts`` entry."""

    protocol: str   # TCP, UDP or SCTP (TCP when absent)
    port: int


@dataclass(frozen=True, slots=True)
class FelixConfigurationSpec:
    """A FelixConfiguration's spec as the model validated it; every field None when absent."""

    log_severity_screen: str | None = None              # Trace, Debug, Info, Warning, Error or Fatal
    route_refresh_interval: float | None = None         # seconds, above 0
    health_enabled: bool | None = None
    health_host: str | None = None                      # an IP address, re-serialised
    health_port: int | None = None
    prometheus_metrics_enabled: bool | None = None
    prometheus_metrics_host: str | None = None          # an IP address, re-serialised
    prometheus_metrics_port: int | None = None
    default_endpoint_to_host_action: str | None = None  # Drop, Accept or Return
    failsafe_inbound_host_ports: tuple[FailsafePort, ...] | None = None    # as written, in order
    failsafe_outbound_host_ports: tuple[FailsafePort, ...] | None = None
    iptables_backend: str | None = None                 # Legacy, NFT or Auto
    reporting_ttl: float | None = None                  # seconds, at least 5


def felixconfiguration_spec(res: Resource) -> FelixConfigurationSpec:
    """The typed spec of a FelixConfiguration, computed once per Resource object.

    Raises ValueError for another kind, and the model's ValidationError for one built by hand that the model
    refuses (one that came through the model's validation is taken as it is).
    """
    return typed_once(res, "FelixConfiguration", _convert)


def _opt(value: Any, convert: Callable[[Any], Any]) -> Any:
    return None if value is None else convert(value)


def _address(value: str) -> str:
    return str(ipaddress.ip_address(value))


def _failsafe(items: list[Mapping[str, Any]]) -> tuple[FailsafePort, ...]:
    return tuple(FailsafePort(str(item.get("protocol") or "TCP"), int(item["port"])) for item in items)


def _convert(spec: Mapping[str, Any]) -> FelixConfigurationSpec:
    return FelixConfigurationSpec(
        log_severity_screen=spec.get("logSeverityScreen"),
        route_refresh_interval=_opt(spec.get("routeRefreshInterval"), parse_duration),
        health_enabled=spec.get("healthEnabled"),
        health_host=_opt(spec.get("healthHost"), _address),
        health_port=spec.get("healthPort"),
        prometheus_metrics_enabled=spec.get("prometheusMetricsEnabled"),
        prometheus_metrics_host=_opt(spec.get("prometheusMetricsHost"), _address),
        prometheus_metrics_port=spec.get("prometheusMetricsPort"),
        default_endpoint_to_host_action=spec.get("defaultEndpointToHostAction"),
        failsafe_inbound_host_ports=_opt(spec.get("failsafeInboundHostPorts"), _failsafe),
        failsafe_outbound_host_ports=_opt(spec.get("failsafeOutboundHostPorts"), _failsafe),
        iptables_backend=spec.get("iptablesBackend"),
        reporting_ttl=_opt(spec.get("reportingTTL"), parse_duration))

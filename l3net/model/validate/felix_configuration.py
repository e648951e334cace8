"""l3net.model.validate.felix_configuration: Calico's FelixConfiguration spec (the agent's settings as a resource).

Owns which FelixConfiguration fields l3net takes (those with an agent setting of the same meaning:
:data:`felix.felixconfig.FIELDS` maps them) and how their values are checked and normalised; every
other field of Calico's FelixConfigurationSpec is refused with "l3net does not support this field"
(issue 19: never accepted and ignored), and its naming rule: ``default`` for the cluster,
``node.<node name>`` for one node.
"""

from __future__ import annotations

import logging
from typing import Any

from l3net.model.validate.addresses import ip_address
from l3net.model.validate.bgp_fields import duration
from l3net.model.validate.checker import (
    Check,
    Checker,
    boolean,
    enum,
    integer,
    listof,
    obj,
    string,
    unsupported,
)
from l3net.model.validate.names import dns_reason
from l3net.model.values import parse_duration

_log = logging.getLogger(__name__)

__all__ = ["FELIX_CONFIGURATION_SPEC", "NOOP_VALUES", "REFUSED_FIELDS", "felix_configuration_name_check"]

# Calico's logLevel validator; Trace and Fatal map to the nearest Python levels (felix.felixconfig).
LOG_LEVELS = ("Trace", "Debug", "Info", "Warning", "Error", "Fatal")


def _positive_duration(c: Checker, value: Any, path: str) -> Any:
    """A Go duration above zero: Calico's 0 switches the refresh off, l3net always heals drift."""
    out = duration(c, value, path)
    if out is not value:
        return out
    if parse_duration(value) <= 0:
        return c.error(path, "must be above 0 (Calico's 0 turns the refresh off; l3net always refreshes)")
    return value


def _ttl(c: Checker, value: Any, path: str) -> Any:
    """A Go duration of at least 5s (the shortest lease the status publisher takes)."""
    out = duration(c, value, path)
    if out is not value:
        return out
    if parse_duration(value) < 5:
        return c.error(path, "must be at least 5s")
    return value


def _host(c: Checker, value: Any, path: str) -> Any:
    """A bind address: an IP address (Calico also takes a host name; l3net binds addresses only)."""
    return ip_address()(c, value, path)


_FAILSAFE_PORT = obj({
    "protocol": enum("TCP", "UDP", "SCTP", fold_case=True),
    "port": integer(1, 65535),
    "net": unsupported(string(), lambda v: v == "", "failsafe ports apply from every address"),
}, required=("port",))

# Every Calico FelixConfigurationSpec field l3net has no setting for (Calico's api v3, felixconfig.go).
# Refused whatever the value (a value given is a wish the agent cannot honour), except NOOP_VALUES.
REFUSED_FIELDS: dict[str, str] = {
    "useInternalDataplaneDriver": "l3net has one dataplane driver", "dataplaneDriver": "l3net has one dataplane driver",
    "ipv6Support": "the agent's dataplane is IPv4",
    "interfaceRefreshInterval": "l3net watches links by netlink events",
    "iptablesRefreshInterval": "routes, iptables and ipsets heal on one schedule: routeRefreshInterval",
    "ipsetsRefreshInterval": "routes, iptables and ipsets heal on one schedule: routeRefreshInterval",
    "iptablesPostWriteCheckInterval": "no post-write check", "iptablesLockFilePath": "iptables-restore takes the lock",
    "iptablesLockTimeout": "iptables-restore takes the lock", "iptablesLockProbeInterval": "iptables-restore takes "
    "the lock", "featureDetectOverride": "no feature overrides", "maxIpsetSize": "sets are sized by their members",
    "xdpRefreshInterval": "no XDP", "netlinkTimeout": "fixed netlink timeouts", "metadataAddr": "no OpenStack "
    "metadata NAT", "metadataPort": "no OpenStack metadata NAT", "openstackRegion": "no OpenStack",
    "interfacePrefix": "the workload interface prefix is fixed",
    "interfaceExclude": "host endpoints each name one interface: no all-interfaces endpoint to exclude from",
    "chainInsertMode": "l3net always inserts its jump rules", "iptablesFilterAllowAction": "fixed allow action",
    "iptablesMangleAllowAction": "fixed allow action", "logPrefix": "fixed LOG prefix",
    "logFilePath": "the agent logs to stderr only", "logSeverityFile": "the agent logs to stderr only",
    "logSeveritySys": "the agent logs to stderr only", "ipipEnabled": "l3net routes natively",
    "ipipMTU": "l3net routes natively", "vxlanEnabled": "l3net routes natively", "vxlanMTU": "l3net routes natively",
    "vxlanPort": "l3net routes natively", "vxlanVNI": "l3net routes natively",
    "allowVXLANPacketsFromWorkloads": "l3net routes natively", "allowIPIPPacketsFromWorkloads": "l3net routes "
    "natively", "reportingInterval": "the status key is refreshed at a third of reportingTTL",
    "endpointReportingEnabled": "endpoint status is not reported", "endpointReportingDelay": "endpoint status "
    "is not reported", "iptablesMarkMask": "fixed mark bits", "disableConntrackInvalidCheck": "fixed conntrack rules",
    "prometheusGoMetricsEnabled": "not a Go process", "prometheusProcessMetricsEnabled": "fixed metric set",
    "prometheusWireGuardMetricsEnabled": "no WireGuard",
    "kubeNodePortRanges": "no kube-proxy IPVS integration", "policySyncPathPrefix": "no policy sync API",
    "usageReportingEnabled": "l3net reports nothing", "usageReportingInitialDelay": "l3net reports nothing",
    "usageReportingInterval": "l3net reports nothing", "natPortRange": "MASQUERADE with the kernel's ports",
    "natOutgoingAddress": "MASQUERADE to the outgoing interface's address",
    "deviceRouteSourceAddress": "fixed route attributes", "deviceRouteProtocol": "l3net's own route protocol marks "
    "its routes", "removeExternalRoutes": "l3net removes only its own routes", "externalNodesList": "no tunnels",
    "debugMemoryProfilePath": "not a Go process", "debugDisableLogDropping": "no log dropping",
    "debugSimulateCalcGraphHangAfter": "no debug hooks", "debugSimulateDataplaneHangAfter": "no debug hooks",
    "iptablesNATOutgoingInterfaceFilter": "no NAT interface filter", "sidecarAccelerationEnabled": "no BPF",
    "xdpEnabled": "no XDP", "genericXDPEnabled": "no XDP", "bpfEnabled": "no BPF dataplane",
    "bpfDisableUnprivileged": "no BPF", "bpfLogLevel": "no BPF", "bpfDataIfacePattern": "no BPF",
    "bpfConnectTimeLoadBalancingEnabled": "no BPF", "bpfExternalServiceMode": "no BPF",
    "bpfExtToServiceConnmark": "no BPF", "bpfKubeProxyIptablesCleanupEnabled": "no BPF",
    "bpfKubeProxyMinSyncPeriod": "no BPF", "bpfKubeProxyEndpointSlicesEnabled": "no BPF",
    "routeSource": "routes come from IPAM blocks and workloads", "routeTableRange": "l3net routes in the main table",
    "wireguardEnabled": "no WireGuard", "wireguardListeningPort": "no WireGuard",
    "wireguardRoutingRulePriority": "no WireGuard", "wireguardInterfaceName": "no WireGuard",
    "wireguardMTU": "no WireGuard", "wireguardHostEncryptionEnabled": "no WireGuard",
    "awsSrcDstCheck": "no cloud integration", "serviceLoopPrevention": "no Service routing",
    "mtuIfacePattern": "MTU is not computed", "floatingIPs": "no floating IPs",
}


# Refused fields whose Calico default (or off value) is what l3net does anyway: accepted at exactly that
# value, so a Calico export that spells them out still applies.
NOOP_VALUES: dict[str, Any] = {
    "bpfEnabled": False, "ipipEnabled": False, "vxlanEnabled": False, "wireguardEnabled": False,
    "wireguardHostEncryptionEnabled": False, "xdpEnabled": False, "genericXDPEnabled": False,
    "sidecarAccelerationEnabled": False, "ipv6Support": False, "usageReportingEnabled": False,
    "endpointReportingEnabled": False, "removeExternalRoutes": False, "floatingIPs": "Disabled",
    "bpfLogLevel": "Off", "chainInsertMode": "Insert", "interfacePrefix": "cali", "routeSource": "CalicoIPAM",
}


def _anything(c: Checker, value: Any, path: str) -> Any:
    """Any value: a refused field is refused whatever it holds, so its shape is not checked first."""
    return value


_NONE = object()


def _is_noop(noop: Any, value: Any) -> bool:
    """``value`` is the no-op value: strings in any case (Calico's enums fold case), ``""`` for an "Off"
    (Calico's unset); booleans exactly (``type`` too: True == 1, and false must not admit the integer 0)."""
    if isinstance(noop, str) and isinstance(value, str):
        return value.lower() == noop.lower() or (noop == "Off" and value == "")
    return noop is not _NONE and type(value) is type(noop) and value == noop


def _refused(name: str, why: str) -> Check:
    noop = NOOP_VALUES.get(name, _NONE)
    return unsupported(_anything, lambda v: _is_noop(noop, v), why)


FELIX_CONFIGURATION_SPEC = obj({
    "logSeverityScreen": enum(*LOG_LEVELS, fold_case=True),
    "routeRefreshInterval": _positive_duration,
    "healthEnabled": boolean,
    "healthHost": _host,
    "healthPort": integer(1, 65535),
    "prometheusMetricsEnabled": boolean,
    "prometheusMetricsHost": _host,
    "prometheusMetricsPort": integer(1, 65535),
    "defaultEndpointToHostAction": enum("Drop", "Accept", "Return", fold_case=True),
    "failsafeInboundHostPorts": listof(_FAILSAFE_PORT),
    "failsafeOutboundHostPorts": listof(_FAILSAFE_PORT),
    "iptablesBackend": enum("Legacy", "NFT", "Auto", fold_case=True),
    "reportingTTL": _ttl,
    **{name: _refused(name, why) for name, why in REFUSED_FIELDS.items()},
})


def felix_configuration_name_check(c: Checker, name: str, spec: dict[str, Any]) -> None:
    """``default`` or ``node.<node name>``, as Calico names them (its selector-scoped kind is not taken)."""
    if name != "default" and (not name.startswith("node.") or dns_reason(name[5:], label=False)):
        c.error("metadata.name", f"{name!r}: a FelixConfiguration is named 'default' or 'node.<node name>'")

"""l3net.model.felixconfiguration_spec: a FelixConfiguration's typed spec, the one parse of the agent's settings."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from l3net.errors import ValidationError
from l3net.model.felixconfiguration_spec import FailsafePort, FelixConfigurationSpec, felixconfiguration_spec
from l3net.model.resource import Resource
from l3net.model.validate.felix_configuration import FELIX_CONFIGURATION_SPEC, REFUSED_FIELDS
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit


def felixconfiguration(spec: dict[str, Any], name: str = "default") -> Resource:
    return resource_from_document({"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
                                   "metadata": {"name": name}, "spec": spec})


def test_every_field_typed() -> None:
    res = felixconfiguration({
        "logSeverityScreen": "fatal", "routeRefreshInterval": "1m30.5s", "healthEnabled": False,
        "healthHost": "0:0::0", "healthPort": 9199, "prometheusMetricsEnabled": True,
        "prometheusMetricsHost": "10.0.0.1", "prometheusMetricsPort": 9191, "defaultEndpointToHostAction": "return",
        "failsafeInboundHostPorts": [{"port": 22}, {"protocol": "udp", "port": 68}, {"protocol": "TCP", "port": 22}],
        "failsafeOutboundHostPorts": [{"protocol": "SCTP", "port": 53, "net": ""}],
        "iptablesBackend": "nft", "reportingTTL": "250ms5s"})
    spec = felixconfiguration_spec(res)
    assert spec == FelixConfigurationSpec(
        log_severity_screen="Fatal", route_refresh_interval=90.5, health_enabled=False, health_host="::",
        health_port=9199, prometheus_metrics_enabled=True, prometheus_metrics_host="10.0.0.1",
        prometheus_metrics_port=9191, default_endpoint_to_host_action="Return",
        failsafe_inbound_host_ports=(FailsafePort("TCP", 22), FailsafePort("UDP", 68), FailsafePort("TCP", 22)),
        failsafe_outbound_host_ports=(FailsafePort("SCTP", 53),), iptables_backend="NFT", reporting_ttl=5.25)
    assert felixconfiguration_spec(res) is spec   # computed once per Resource object


def test_absent_fields_are_none_and_no_op_values_carry_nothing() -> None:
    assert felixconfiguration_spec(felixconfiguration({})) == FelixConfigurationSpec()
    assert all(getattr(FelixConfigurationSpec(), f.name) is None for f in dataclasses.fields(FelixConfigurationSpec))
    noop = felixconfiguration({"bpfEnabled": False, "chainInsertMode": "insert", "bpfLogLevel": ""}, "node.n1")
    assert felixconfiguration_spec(noop) == FelixConfigurationSpec()
    assert felixconfiguration_spec(felixconfiguration({"failsafeInboundHostPorts": []})).failsafe_inbound_host_ports \
        == ()


def test_every_field_the_model_accepts_has_an_attribute() -> None:
    accepted = set(FELIX_CONFIGURATION_SPEC.fields) - set(REFUSED_FIELDS)  # type: ignore[attr-defined]
    snake = {re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower() for name in accepted}
    assert snake == {f.name for f in dataclasses.fields(FelixConfigurationSpec)}


@pytest.mark.parametrize(("spec", "path"), [
    ({"routeRefreshInterval": "0s"}, "spec.routeRefreshInterval"),
    ({"routeRefreshInterval": "soon"}, "spec.routeRefreshInterval"),
    ({"routeRefreshInterval": 30}, "spec.routeRefreshInterval"),
    ({"reportingTTL": "4s"}, "spec.reportingTTL"),
    ({"healthHost": "localhost"}, "spec.healthHost"),
    ({"healthPort": 0}, "spec.healthPort"),
    ({"healthEnabled": "yes"}, "spec.healthEnabled"),
    ({"logSeverityScreen": "Verbose"}, "spec.logSeverityScreen"),
    ({"failsafeInboundHostPorts": [{"protocol": "ICMP", "port": 1}]}, "spec.failsafeInboundHostPorts[0].protocol"),
    ({"failsafeOutboundHostPorts": [{"port": 53, "net": "10.0.0.0/8"}]}, "spec.failsafeOutboundHostPorts[0].net"),
    ({"bpfEnabled": True}, "spec.bpfEnabled"),
    ({"routeRefreshIntervl": "5s"}, "spec.routeRefreshIntervl"),
])
def test_a_hand_built_felixconfiguration_the_model_refuses_gets_no_typed_spec(spec: dict[str, Any],
                                                                            path: str) -> None:
    with pytest.raises(ValidationError) as err:
        felixconfiguration_spec(Resource(kind="FelixConfiguration", name="default", spec=spec))
    assert [e.path for e in err.value.errors] == [path], err.value.errors


def test_a_hand_built_felixconfiguration_with_a_bad_name_is_refused() -> None:
    with pytest.raises(ValidationError) as err:
        felixconfiguration_spec(Resource(kind="FelixConfiguration", name="n1", spec={}))
    assert [e.path for e in err.value.errors] == ["metadata.name"]


def test_a_hand_built_felixconfiguration_the_model_accepts() -> None:
    res = Resource(kind="FelixConfiguration", name="node.n1", spec={"routeRefreshInterval": "2m", "healthPort": 1})
    assert felixconfiguration_spec(res) == FelixConfigurationSpec(route_refresh_interval=120.0, health_port=1)


def test_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not of kind FelixConfiguration"):
        felixconfiguration_spec(Resource(kind="IPPool", name="p", spec={"cidr": "10.0.0.0/16"}))

"""FelixConfiguration as a kind: Calico-shaped documents apply, names are `default` or `node.<name>`,
values are normalised, and every Calico field without an l3net setting is refused with its name."""

from __future__ import annotations

import pytest

from l3net.errors import ValidationError
from l3net.model.documents import load_documents
from l3net.model.validate.checker import UNSUPPORTED
from l3net.model.validate.felix_configuration import NOOP_VALUES, REFUSED_FIELDS

pytestmark = pytest.mark.unit

DEFAULT = """\
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  logSeverityScreen: info
  routeRefreshInterval: 1m30s
  healthPort: 9099
  healthHost: 127.0.0.1
  prometheusMetricsEnabled: true
  prometheusMetricsPort: 9091
  defaultEndpointToHostAction: ACCEPT
  failsafeInboundHostPorts: [{protocol: tcp, port: 22}, {port: 179}, {protocol: UDP, port: 68, net: ""}]
  iptablesBackend: nft
  reportingTTL: 90s
"""


def _fc(name: str, spec: str) -> str:
    return f"apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {{name: {name}}}\nspec: {spec}\n"


def _refusal(text: str) -> str:
    with pytest.raises(ValidationError) as ei:
        load_documents(text, "fc.yaml")
    return str(ei.value)


def test_a_calico_default_document_applies_with_values_normalised() -> None:
    (res,) = load_documents(DEFAULT, "fc.yaml")
    assert res.kind == "FelixConfiguration" and res.name == "default"
    assert res.spec["logSeverityScreen"] == "Info"
    assert res.spec["defaultEndpointToHostAction"] == "Accept"
    assert res.spec["iptablesBackend"] == "NFT"
    assert res.spec["failsafeInboundHostPorts"][0] == {"protocol": "TCP", "port": 22}
    assert res.to_document()["apiVersion"] == "l3net.io/v1"


def test_a_per_node_document_applies() -> None:
    (res,) = load_documents(_fc("node.worker-1", "{logSeverityScreen: Debug}"), "fc.yaml")
    assert res.name == "node.worker-1"


@pytest.mark.parametrize("name", ["global", "node.", "node.Bad_Name", "nodeworker"])
def test_other_names_are_refused(name: str) -> None:
    assert "a FelixConfiguration is named 'default' or 'node.<node name>'" in _refusal(_fc(name, "{}"))


@pytest.mark.parametrize(("spec", "message"), [
    ("{logSeverityScreen: Verbose}", "spec.logSeverityScreen: must be one of Trace, Debug, Info"),
    ("{routeRefreshInterval: 0s}", "spec.routeRefreshInterval: must be above 0"),
    ("{routeRefreshInterval: 90}", "spec.routeRefreshInterval: must be a duration string"),
    ("{healthPort: 70000}", "spec.healthPort: 70000 is out of range 1..65535"),
    ("{healthHost: localhost}", "spec.healthHost"),
    ("{reportingTTL: 1s}", "spec.reportingTTL: must be at least 5s"),
    ("{failsafeInboundHostPorts: [{protocol: icmp, port: 1}]}", "spec.failsafeInboundHostPorts[0].protocol"),
    ("{failsafeInboundHostPorts: [{protocol: tcp}]}", "spec.failsafeInboundHostPorts[0].port: required"),
    ("{failsafeInboundHostPorts: [{port: 22, net: 10.0.0.0/8}]}",
     f"spec.failsafeInboundHostPorts[0].net: {UNSUPPORTED} (failsafe ports apply from every address)"),
    ("{healthPort: 1, bogusField: 1}", "spec.bogusField: unknown field"),
])
def test_bad_values_name_the_field(spec: str, message: str) -> None:
    assert message in _refusal(_fc("default", spec))


@pytest.mark.parametrize("field", sorted(REFUSED_FIELDS))
def test_every_other_calico_field_is_refused_by_name_with_the_reason(field: str) -> None:
    text = _refusal(_fc("default", f"{{{field}: 'on'}}"))
    assert f"spec.{field}: {UNSUPPORTED} ({REFUSED_FIELDS[field]})" in text


def test_common_calico_fields_are_in_the_refused_list() -> None:
    # The fields a Calico install sets most often (and its sample YAML) are refused, not "unknown".
    for field in ("ipv6Support", "ipipMTU", "chainInsertMode", "bpfEnabled", "vxlanEnabled", "floatingIPs",
                  "iptablesRefreshInterval", "ipsetsRefreshInterval", "reportingInterval", "routeTableRange"):
        assert field in REFUSED_FIELDS


def test_a_calico_export_spelling_out_what_l3net_does_anyway_applies() -> None:
    # The shape of `calicoctl get felixconfiguration default -o yaml` on a cluster without tunnels or BPF.
    text = _fc("default", "{bpfEnabled: false, bpfLogLevel: '', floatingIPs: Disabled, ipipEnabled: false, "
                          "vxlanEnabled: false, logSeverityScreen: Info, healthPort: 9099, routeSource: CalicoIPAM, "
                          "chainInsertMode: insert}")
    (res,) = load_documents(text, "export.yaml")
    assert res.spec["floatingIPs"] == "Disabled"
    assert load_documents(_fc("default", "{bpfLogLevel: 'Off'}"), "x.yaml")
    assert set(NOOP_VALUES) <= set(REFUSED_FIELDS)


@pytest.mark.parametrize(("field", "value"), [("bpfEnabled", "true"), ("bpfEnabled", "0"), ("floatingIPs", "Enabled"),
                                              ("chainInsertMode", "Append"), ("interfacePrefix", "tap")])
def test_other_values_of_those_fields_are_refused(field: str, value: str) -> None:
    assert f"spec.{field}: {UNSUPPORTED}" in _refusal(_fc("default", f"{{{field}: {value}}}"))

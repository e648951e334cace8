"""felix.felixconfig: Calico's precedence (flag > environment > node.<name> > default > config/ keys > default),
the field conversions, live versus restart, and a bad stored resource keeping the previous values."""

from __future__ import annotations

import json
import logging

import pytest

from felix import config
from felix.felixconfig import FIELDS, FelixConfigView, resolve, split_live
from l3net.keys import KeyLayout
from l3net.model.documents import load_documents
from l3net.model.validate.felix_configuration import FELIX_CONFIGURATION_SPEC

pytestmark = pytest.mark.unit

KEYS = KeyLayout("/t/")


def _spec(text: str) -> dict:
    (res,) = load_documents("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\n"
                            f"metadata: {{name: default}}\nspec: {text}\n", "t.yaml")
    return res.spec


def test_node_beats_default_beats_default_value() -> None:
    base = config.load({"node": "n1"}, {})
    specs = {"default": _spec("{routeRefreshInterval: 10m, logSeverityScreen: Warning}"),
             "node.n1": _spec("{routeRefreshInterval: 2s}"),
             "node.n2": _spec("{routeRefreshInterval: 1s, logSeverityScreen: Debug}")}
    cfg = resolve(base, specs, "n1")
    assert cfg.route_refresh_interval == 2.0 and cfg.sources["route_refresh_interval"] == "FelixConfiguration node.n1"
    assert cfg.log_level == "WARNING" and cfg.sources["log_level"] == "FelixConfiguration default"
    assert cfg.apply_max_interval == 90.0 and cfg.sources["apply_max_interval"] == "default"
    assert resolve(base, specs, "n2").route_refresh_interval == 1.0


def test_flag_and_environment_beat_every_felix_configuration() -> None:
    base = config.load({"node": "n1", "log_level": "ERROR"}, {"L3NET_ROUTE_REFRESH_INTERVAL": "30"})
    specs = {"default": _spec("{routeRefreshInterval: 10m, logSeverityScreen: Debug}"),
             "node.n1": _spec("{routeRefreshInterval: 2s, logSeverityScreen: Debug}")}
    cfg = resolve(base, specs, "n1")
    assert (cfg.log_level, cfg.route_refresh_interval) == ("ERROR", 30.0)
    assert cfg.sources["route_refresh_interval"] == "L3NET_ROUTE_REFRESH_INTERVAL"


def test_felix_configuration_beats_the_legacy_config_keys() -> None:
    base = config.load({"node": "n1"}, {})
    raw = {config.config_key(KEYS, "node", "RouteRefreshInterval", "n1"): b"7",
           config.config_key(KEYS, "global", "ApplyMaxInterval"): b"45"}
    legacy = config.with_datastore(base, raw, KEYS, "n1")
    cfg = resolve(legacy, {"default": _spec("{routeRefreshInterval: 3s}")}, "n1")
    assert cfg.route_refresh_interval == 3.0                 # the resource beats the legacy node key
    assert cfg.apply_max_interval == 45.0                    # a legacy key with no resource value still applies


def test_every_field_converts_to_what_the_agent_parser_would_make() -> None:
    spec = _spec("{logSeverityScreen: fatal, healthEnabled: false, healthHost: 0.0.0.0, healthPort: 9199, "
                 "prometheusMetricsEnabled: false, prometheusMetricsHost: 10.0.0.1, prometheusMetricsPort: 9191, "
                 "defaultEndpointToHostAction: return, iptablesBackend: Legacy, reportingTTL: 1m30.5s, "
                 "failsafeInboundHostPorts: [{port: 22}, {protocol: udp, port: 68}, {protocol: TCP, port: 22}], "
                 "failsafeOutboundHostPorts: [{protocol: UDP, port: 53}]}")
    cfg = resolve(config.load({"node": "n1"}, {}), {"default": spec}, "n1")
    assert set(spec) == set(FIELDS) - {"routeRefreshInterval"}
    assert cfg.log_level == config.parse_log_level("critical")
    assert (cfg.health_enabled, cfg.health_host, cfg.health_port) == (False, "0.0.0.0", 9199)
    assert (cfg.metrics_enabled, cfg.metrics_host, cfg.metrics_port) == (False, "10.0.0.1", 9191)
    assert cfg.default_endpoint_to_host_action == config.parse_endpoint_to_host_action("Return")
    assert cfg.iptables_backend == config.parse_iptables_backend("legacy")
    assert cfg.failsafe_inbound_host_ports == config.parse_failsafe_ports("tcp:22, udp:68")
    assert cfg.failsafe_outbound_host_ports == config.parse_failsafe_ports("udp:53")
    assert cfg.status_ttl == 91


def test_every_mapped_field_is_in_the_schema_and_sets_a_real_parameter() -> None:
    assert set(FIELDS) <= set(FELIX_CONFIGURATION_SPEC.fields)  # type: ignore[attr-defined]
    assert {f.param for f in FIELDS.values()} <= set(config.PARAMS_BY_NAME)


def test_live_parameters_apply_and_the_others_wait_for_a_restart() -> None:
    old = config.load({"node": "n1"}, {})
    wanted = resolve(old, {"default": _spec("{routeRefreshInterval: 5s, healthPort: 9199}")}, "n1")
    now, pending = split_live(old, wanted, config.LIVE_PARAMS)
    assert now.route_refresh_interval == 5.0 and now.sources["route_refresh_interval"] == "FelixConfiguration default"
    assert now.health_port == old.health_port and now.sources["health_port"] == "default"
    assert pending == {"health_port": 9199}
    assert split_live(now, now, config.LIVE_PARAMS)[1] == {}


def _put(name: str, spec: dict) -> tuple[str, bytes]:
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration", "metadata": {"name": name},
           "spec": spec}
    return KEYS.resource("felixconfigurations", name), json.dumps(doc).encode()


def test_view_reads_only_this_nodes_resources() -> None:
    view = FelixConfigView(KEYS, "n1")
    view.load_raw(dict([_put("default", {"routeRefreshInterval": "9s"}), _put("node.n2", {"healthPort": 1})]))
    assert view.specs == {"default": {"routeRefreshInterval": "9s"}}
    assert view.concerns([KEYS.resource("felixconfigurations", "node.n1")])
    assert not view.concerns([KEYS.resource("felixconfigurations", "node.n2"), KEYS.resource("ippools", "p")])


def test_a_bad_stored_resource_keeps_the_previous_values(caplog: pytest.LogCaptureFixture) -> None:
    view = FelixConfigView(KEYS, "n1")
    good_key, good = _put("node.n1", {"routeRefreshInterval": "2s"})
    view.load_raw({good_key: good})
    assert view.specs["node.n1"] == {"routeRefreshInterval": "2s"}
    _, bad = _put("node.n1", {"routeRefreshInterval": "soon", "bpfEnabled": True})   # written past l3netctl
    with caplog.at_level(logging.WARNING, logger="felix.felixconfig"):
        view.load_raw({good_key: bad})
    assert view.specs["node.n1"] == {"routeRefreshInterval": "2s"}
    assert "invalid FelixConfiguration in the datastore, keeping its previous values resource=node.n1" in caplog.text
    assert "spec.routeRefreshInterval" in caplog.text and "spec.bpfEnabled" in caplog.text
    assert view.update({}, {}) is True and view.specs == {}     # deleted: gone
    assert view.update({}, {}) is False                         # unchanged input: no change reported
    # A bad resource with nothing before it is skipped: the next source applies.
    view.load_raw({good_key: b"{not json"})
    assert view.specs == {}


def test_view_update_reports_changes_only() -> None:
    view = FelixConfigView(KEYS, "n1")
    key, raw = _put("default", {"logSeverityScreen": "Debug"})
    view.load_raw({key: raw})
    (res,) = load_documents(raw.decode(), "x")
    assert view.update({key: res}, {}) is False
    (res2,) = load_documents(_put("default", {"logSeverityScreen": "Info"})[1].decode(), "x")
    assert view.update({key: res2}, {}) is True and view.specs["default"] == {"logSeverityScreen": "Info"}


class _RecordingLoop:
    """The two things the agent's reconfiguration touches on its sync loop: the model and set_config."""

    def __init__(self) -> None:
        from felix.calc import Model

        self.model = Model(KEYS)
        self.configs: list = []

    def set_config(self, cfg: object) -> None:
        self.configs.append(cfg)


def test_agent_applies_a_live_change_and_holds_a_restart_one(caplog: pytest.LogCaptureFixture) -> None:
    from felix.main import Agent, config_report
    from l3net.health import HealthState
    from l3net.syncer import KeyUpdate

    base = config.load({"node": "n1", "etcd_prefix": "/t/"}, {})
    agent = Agent(base, object(), None, HealthState())  # type: ignore[arg-type]  # the datastore is not used here
    loop = _RecordingLoop()
    agent.sync = loop  # type: ignore[assignment]
    root = logging.getLogger()
    level = root.level
    try:
        def deliver(*updates: tuple[str, bytes | None]) -> None:
            batch = [KeyUpdate(k, v, 1) for k, v in updates]
            loop.model.apply(batch)
            agent._after_updates(batch)

        deliver(_put("node.n2", {"logSeverityScreen": "Error"}))     # first batch: read, nothing of ours
        assert agent.cfg.log_level == "INFO" and loop.configs == []
        with caplog.at_level(logging.INFO, logger="felix.main"):
            deliver(_put("default", {"logSeverityScreen": "Warning", "routeRefreshInterval": "4s",
                                     "prometheusMetricsPort": 9333}))
        assert root.level == logging.WARNING and agent.cfg.log_level == "WARNING"
        assert loop.configs[-1].refresh_interval == 4.0
        assert agent.cfg.metrics_port == 9091 and agent.pending_restart == {"metrics_port": 9333}
        assert "configuration changes need an agent restart to take effect params={'metrics_port': " \
               "'9333 (from FelixConfiguration default)'}" in caplog.text
        assert config_report(agent.cfg, agent.pending_restart)["pendingRestart"] == {"metrics_port": 9333}
        # Another node's resource changes nothing here; a bad copy of ours keeps the previous values.
        deliver(_put("node.n2", {"logSeverityScreen": "Debug"}))
        key, _ = _put("default", {})
        deliver((key, b'{"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration", '
                      b'"metadata": {"name": "default"}, "spec": {"bpfEnabled": true}}'))
        assert agent.cfg.log_level == "WARNING" and agent.cfg.route_refresh_interval == 4.0
        deliver((key, None))                                          # deleted: the defaults again
        assert agent.cfg.log_level == "INFO" and agent.cfg.route_refresh_interval == 90.0
        assert agent.pending_restart == {}
    finally:
        root.setLevel(level)
        agent.io.shutdown(wait=False)


def test_resolve_maps_the_models_typed_spec_the_same_as_the_validated_spec() -> None:
    from l3net.model.felixconfiguration_spec import felixconfiguration_spec

    view = FelixConfigView(KEYS, "n1")
    view.load_raw(dict([_put("default", {"logSeverityScreen": "Warning", "routeRefreshInterval": "10m",
                                         "failsafeInboundHostPorts": [{"port": 22}, {"protocol": "TCP", "port": 22}]}),
                        _put("node.n1", {"routeRefreshInterval": "2s", "reportingTTL": "5.5s"})]))
    (res,) = load_documents(_put("node.n1", {"routeRefreshInterval": "2s", "reportingTTL": "5.5s"})[1].decode(), "x")
    assert view.typed["node.n1"] == felixconfiguration_spec(res) and set(view.typed) == set(view.specs)
    base = config.load({"node": "n1"}, {})
    cfg, from_specs = resolve(base, view.typed, "n1"), resolve(base, view.specs, "n1")
    assert (cfg.as_dict(), cfg.sources) == (from_specs.as_dict(), from_specs.sources)
    assert (cfg.log_level, cfg.route_refresh_interval, cfg.status_ttl) == ("WARNING", 2.0, 6)
    assert cfg.failsafe_inbound_host_ports == (("tcp", 22),)


def test_a_spec_the_model_refuses_is_skipped_and_the_next_source_applies(caplog: pytest.LogCaptureFixture) -> None:
    base = config.load({"node": "n1"}, {})
    with caplog.at_level(logging.WARNING, logger="felix.felixconfig"):
        cfg = resolve(base, {"node.n1": {"routeRefreshInterval": "soon"},
                             "default": _spec("{routeRefreshInterval: 3s}")}, "n1")
    assert cfg.route_refresh_interval == 3.0 and cfg.sources["route_refresh_interval"] == "FelixConfiguration default"
    assert "FelixConfiguration not taken resource=node.n1" in caplog.text and "spec.routeRefreshInterval" in caplog.text


def test_a_hand_built_resource_the_model_refuses_keeps_the_previous_values() -> None:
    from l3net.model.resource import Resource

    view = FelixConfigView(KEYS, "n1")
    key, good = _put("default", {"routeRefreshInterval": "9s"})
    view.load_raw({key: good})
    bad = Resource(kind="FelixConfiguration", name="default", spec={"routeRefreshInterval": "0s"})
    assert view.update({key: bad}, {}) is False
    assert view.specs == {"default": {"routeRefreshInterval": "9s"}}
    assert view.typed["default"].route_refresh_interval == 9.0
    ok = Resource(kind="FelixConfiguration", name="default", spec={"routeRefreshInterval": "4s"})
    assert view.update({key: ok}, {}) is True and view.typed["default"].route_refresh_interval == 4.0

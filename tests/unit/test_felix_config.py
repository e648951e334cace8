"""felix.config (the parameter table), felix.nodeip (address autodetection) and l3net.health."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from felix import config
from felix.nodeip import Address, Method, choose, parse_method
from l3net.health import HealthServer, HealthState
from l3net.keys import KeyLayout
from tests.builders import Upd

pytestmark = pytest.mark.unit


def test_flag_beats_env_beats_default() -> None:
    cfg = config.load({"node": "n7", "health_port": None},
                      {"L3NET_NODE": "envnode", "L3NET_HEALTH_PORT": "19099", "L3NET_AS_NUMBER": "64513"})
    assert cfg.node == "n7" and cfg.sources["node"] == "--node"
    assert cfg.health_port == 19099 and cfg.sources["health_port"] == "L3NET_HEALTH_PORT"
    assert cfg.as_number == 64513
    assert cfg.metrics_port == 9091 and cfg.sources["metrics_port"] == "default"
    assert cfg.etcd_prefix == "/l3net/v1/"


@pytest.mark.parametrize(("env", "message"), [
    ({"L3NET_HEALTH_PORT": "99999"}, "health_port (from L3NET_HEALTH_PORT): must be 0..65535"),
    ({"L3NET_BGP_ENABLED": "maybe"}, "bgp_enabled (from L3NET_BGP_ENABLED): expected true or false"),
    ({"L3NET_IP": "10.0.0.1"}, "ip (from L3NET_IP)"),
    ({"L3NET_IP_AUTODETECTION_METHOD": "interface=("}, "bad regular expression"),
    ({"L3NET_AS_NUMBER": "0"}, "AS number must be"),
    ({"L3NET_APPLY_MIN_INTERVAL": "-1"}, "must not be negative"),
])
def test_bad_values_name_the_parameter_and_source(env: dict[str, str], message: str) -> None:
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load({}, env)


def test_every_parameter_has_help_and_an_env_name() -> None:
    for p in config.PARAMS:
        assert p.help and p.env == "L3NET_" + p.name.upper()
    assert config.load({}, {}).ip == "autodetect"


ADDRS = [Address("lo", "127.0.0.1", 8), Address("docker0", "172.17.0.1", 16),
         Address("cali12345678901", "10.9.9.9", 32),
         Address("eth0", "10.0.0.11", 24), Address("eth1", "192.168.5.3", 24)]


@pytest.mark.parametrize(("method", "source", "expected"), [
    ("first-found", None, "eth0"),
    ("interface=eth1", None, "eth1"),
    ("interface=nomatch,eth.*", None, "eth0"),
    ("skip-interface=eth0", None, "eth1"),
    ("cidr=192.168.0.0/16", None, "eth1"),
    ("can-reach=192.168.5.1", "192.168.5.3", "eth1"),
    ("cidr=172.30.0.0/16", None, None),
])
def test_autodetection_methods(method: str, source: str | None, expected: str | None) -> None:
    found = choose(parse_method(method), ADDRS, source)
    assert (found.ifname if found else None) == expected


def test_bad_autodetection_method() -> None:
    with pytest.raises(ValueError, match="unknown autodetection method"):
        parse_method("first")
    assert parse_method("can-reach=10.0.0.1") == Method("can-reach", "10.0.0.1")


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_health_endpoints_report_reasons() -> None:
    now = [100.0]
    state = HealthState(liveness_timeout=10, clock=lambda: now[0])
    server = HealthServer(state, "127.0.0.1", 0)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        code, body = _get(base + "/readiness")
        assert code == 503 and set(body["notReady"]) == {"datastore", "dataplane"}
        state.set_ready("datastore", True)
        state.set_ready("dataplane", True)
        assert _get(base + "/readiness") == (200, {"ready": True, "notReady": {}})
        state.set_ready("dataplane", False, "last apply failed: boom")
        assert _get(base + "/readiness")[1]["notReady"] == {"dataplane": "last apply failed: boom"}
        # A warning shows in the body but never makes the node unready.
        state.set_ready("dataplane", True)
        state.set_warning("routesRefused", "1 routes refused by the kernel: replace 10.99.0.0/24 ...")
        code, body = _get(base + "/readiness")
        assert code == 200 and body["ready"] and body["warnings"] == {
            "routesRefused": "1 routes refused by the kernel: replace 10.99.0.0/24 ..."}
        state.set_warning("routesRefused", None)
        assert _get(base + "/readiness") == (200, {"ready": True, "notReady": {}})
        assert _get(base + "/liveness")[0] == 200
        now[0] += 11
        assert _get(base + "/liveness")[0] == 503
    finally:
        server.stop()


# -- datastore configuration (config/global/<Name>, config/node/<node>/<Name>) --------------------
KEYS = KeyLayout("/t/")


def _raw(**values: str) -> dict[str, bytes]:
    """``global_LogLevel="DEBUG"`` / ``node_n1_LogLevel="ERROR"`` -> {key: value}."""
    out = {}
    for spec, value in values.items():
        scope, _, rest = spec.partition("_")
        if scope == "global":
            out[config.config_key(KEYS, "global", rest)] = value.encode()
        else:
            node, _, name = rest.partition("_")
            out[config.config_key(KEYS, "node", name, node)] = value.encode()
    return out


def test_config_keys_follow_the_v1_layout() -> None:
    assert config.config_key(KEYS, "global", "LogLevel") == "/t/config/global/LogLevel"
    assert config.config_key(KEYS, "node", "RouteRefreshInterval", "n1") == "/t/config/node/n1/RouteRefreshInterval"
    assert config.PARAMS_BY_NAME["route_refresh_interval"].datastore_name == "RouteRefreshInterval"
    for bad in (("node", "LogLevel", None), ("cluster", "LogLevel", None), ("global", "a/b", None)):
        with pytest.raises(ValueError):
            config.config_key(KEYS, *bad)


def test_precedence_flag_env_node_global_default() -> None:
    base = config.load({"apply_min_interval": "0.5"}, {"L3NET_LOG_LEVEL": "WARNING"})
    raw = _raw(global_LogLevel="DEBUG", global_ApplyMinInterval="2", global_RouteRefreshInterval="30",
               node_n1_RouteRefreshInterval="5", node_n2_RouteRefreshInterval="7", global_PolicyEnabled="false",
               global_Node="evil")
    cfg = config.with_datastore(base, raw, KEYS, "n1")
    assert cfg.apply_min_interval == 0.5 and cfg.sources["apply_min_interval"] == "--apply-min-interval"
    assert cfg.log_level == "WARNING" and cfg.sources["log_level"] == "L3NET_LOG_LEVEL"
    assert cfg.route_refresh_interval == 5.0
    assert cfg.sources["route_refresh_interval"] == "datastore /t/config/node/n1/RouteRefreshInterval"
    assert cfg.policy_enabled is False and cfg.sources["policy_enabled"] == "datastore /t/config/global/PolicyEnabled"
    assert cfg.node == base.node  # not a datastore parameter: never read from there
    assert cfg.apply_max_interval == 90.0 and cfg.sources["apply_max_interval"] == "default"
    other = config.with_datastore(base, raw, KEYS, "n2")
    assert other.route_refresh_interval == 7.0
    assert config.with_datastore(base, {}, KEYS, "n1").as_dict() == base.as_dict()


def test_bad_datastore_values_are_logged_with_their_key_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    base = config.load({}, {})
    raw = _raw(node_n1_RouteRefreshInterval="soon", global_RouteRefreshInterval="20", global_LogLevel="LOUD",
               global_ApplyMaxFailures="0", global_BgpEnabled="\xff")
    raw[config.config_key(KEYS, "global", "StartupSweepDelay")] = b"\xff\xfe"
    cfg = config.with_datastore(base, raw, KEYS, "n1")
    assert cfg.route_refresh_interval == 20.0  # the bad node value falls through to the global one
    assert cfg.log_level == "INFO" and cfg.apply_max_failures == 10 and cfg.startup_sweep_delay == 30.0
    text = caplog.text
    for key in ("/t/config/node/n1/RouteRefreshInterval", "/t/config/global/LogLevel",
                "/t/config/global/ApplyMaxFailures", "/t/config/global/StartupSweepDelay"):
        assert f"key={key}" in text


def test_datastore_config_arrives_with_the_model_and_reaches_the_loop() -> None:
    from felix.calc import Model
    from felix.loop import LoopConfig, SyncLoop

    seen: list[dict[str, bytes]] = []
    sync = SyncLoop(Model(KEYS), "n1", None, on_config=seen.append)  # type: ignore[arg-type]  # no apply here
    sync.on_updates([Upd(config.config_key(KEYS, "global", "LogLevel"), b"DEBUG")])
    sync.on_updates([Upd("/t/resources/nodes/n1", None)])  # not a config key: no callback
    assert seen == [{"/t/config/global/LogLevel": b"DEBUG"}]
    sync.on_updates([Upd(config.config_key(KEYS, "global", "LogLevel"), None)])
    assert seen[-1] == {}
    before = sync._next_refresh
    sync.set_config(LoopConfig(refresh_interval=1.0))
    assert sync._next_refresh < before and sync.config.refresh_interval == 1.0




def test_read_datastore_config_bounded_when_etcd_is_down() -> None:
    from l3net.errors import DatastoreUnavailable

    class Down:
        calls = 0

        def list(self, prefix: str) -> None:
            Down.calls += 1
            raise DatastoreUnavailable("unix:///nowhere", "connection refused")

    assert config.read_datastore_config(Down(), KEYS, attempts=3, sleep=lambda _s: None) == {}  # type: ignore[arg-type]
    assert Down.calls == 3


# -- metrics read at scrape time from their owners ------------------------------------------------
def test_sourced_metrics_are_typed_and_undeclared_names_fail() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from l3net.metrics import SourcedCollector

    reg = CollectorRegistry()
    col = SourcedCollector()
    reg.register(col)
    stats = {"l3net_iptables_restore_calls": 3, "l3net_iptables_apply_seconds": 0.25}
    col.set_source("iptables", lambda: stats)
    text = generate_latest(reg).decode()
    assert "l3net_iptables_restore_calls_total 3.0" in text
    assert "# TYPE l3net_iptables_apply_seconds gauge" in text and "l3net_iptables_apply_seconds 0.25" in text
    assert "l3net_policy_rules" not in text  # no source reports it: not exported
    stats["l3net_iptables_restore_calls"] = 4  # read at scrape time, not copied
    assert "l3net_iptables_restore_calls_total 4.0" in generate_latest(reg).decode()
    col.set_source("bad", lambda: {"l3net_not_declared": 1})
    with pytest.raises(ValueError, match="l3net_not_declared"):
        col.values()
    col.set_source("bad", None)
    assert col.values()["l3net_iptables_restore_calls"] == 4.0

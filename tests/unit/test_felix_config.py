"""felix.config (the parameter table), felix.nodeip (address autodetection) and felix.health."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from felix import config
from felix.health import HealthServer, HealthState
from felix.nodeip import Address, Method, choose, parse_method

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
        assert _get(base + "/liveness")[0] == 200
        now[0] += 11
        assert _get(base + "/liveness")[0] == 503
    finally:
        server.stop()

"""Unit tests of the benchmark framework: statistics, interleaving, ratios, targets, JSON, report, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jsonschema
import pytest

from bench import BENCHMARKS, framework, report
from bench import cli as benchcli
from bench.ipam import CountingDatastore
from bench.route_scale import prefixes

pytestmark = pytest.mark.unit


def test_percentile_interpolates() -> None:
    assert framework.percentile([1, 2, 3, 4], 50) == 2.5
    assert framework.percentile([5], 99) == 5
    assert framework.percentile([0, 10], 90) == pytest.approx(9.0)
    with pytest.raises(ValueError):
        framework.percentile([], 50)


def test_interleaved_rotates_every_variant_through_every_position() -> None:
    order = list(framework.interleaved(3, ["a", "b", "c"]))
    assert [v for r, v in order if r == 0] == ["a", "b", "c"]
    assert [v for r, v in order if r == 1] == ["b", "c", "a"]
    assert [v for r, v in order if r == 2] == ["c", "a", "b"]
    firsts = {next(v for r, v in order if r == k) for k in range(3)}
    assert firsts == {"a", "b", "c"}


def _result(rounds: int = 3) -> framework.Result:
    res = framework.Result("demo", "a demo", quick=True)
    pairs = [(10.0, 5.0), (12.0, 6.0), (8.0, 2.0)]
    for k in range(rounds):
        a, b = pairs[k % 3]
        res.sample("rate", "ours", a, unit="op/s")
        res.sample("rate", "base", b, unit="op/s")
    return res


def test_ratio_is_the_median_of_paired_rounds_with_its_spread() -> None:
    res = _result(12)
    value = res.ratio("ours/base", "rate", "ours", "base", op=">=", threshold=1.5)
    entry = res.ratios[0]
    assert entry["paired"] == pytest.approx([2.0, 2.0, 4.0] * 4)
    assert value == entry["median"] == 2.0
    assert entry["rounds"] == 12
    assert entry["spread"]["min"] == 2.0 and entry["spread"]["max"] == 4.0
    assert entry["verdict"] == "pass" and entry["pass"] is True
    assert res.targets[0]["pass"] is True and res.targets[0]["rounds"] == 12


def test_fewer_than_ten_rounds_give_no_verdict() -> None:
    res = _result(3)
    assert res.ratio("ours/base", "rate", "ours", "base", op=">=", threshold=1.5) == 2.0
    assert res.ratios[0]["verdict"] == "insufficient rounds" and res.ratios[0]["pass"] is None
    doc = res.to_json(command="l3net bench demo", machine=framework.machine_info(), started=0, duration=1)
    assert doc["passed"] is None  # no verdict is not a pass
    assert "insufficient rounds (3 < 10)" in framework.format_table(doc)


def test_failed_and_unmeasured_targets() -> None:
    res = _result(10)
    assert res.ratio("x", "rate", "ours", "base", op=">=", threshold=3.0) is not None
    assert res.targets[-1]["pass"] is False and res.targets[-1]["verdict"] == "fail"
    assert res.ratio("y", "rate", "ours", "missing", op=">=", threshold=1.0) is None
    assert res.targets[-1]["pass"] is None and res.targets[-1]["verdict"] == "not measured"
    assert res.target("p99", 0.9, unit="s", op="<=", threshold=1.0, rounds=20) is True
    assert res.target("p99 few", 0.9, unit="s", op="<=", threshold=1.0, rounds=3) is None
    assert res.target("p99 unknown", 0.9, unit="s", op="<=", threshold=1.0) is None
    assert res.targets[-1]["verdict"] == "insufficient rounds"


def test_quantile_ratio_target() -> None:
    res = framework.Result("demo", "a demo", quick=False)
    for k in range(20):
        res.sample("ms", "ours", 100.0 + k, unit="ms", better="lower")
        res.sample("ms", "floor", 10.0, unit="ms", better="lower")
    value = res.ratio("p99", "ms", "ours", "floor", op="<=", threshold=20.0, quantile=99)
    assert value == pytest.approx(framework.percentile([100.0 + k for k in range(20)], 99) / 10.0)
    assert res.ratios[0]["rounds"] == 20 and res.ratios[0]["verdict"] == "pass"


def test_sample_rejects_unit_change_and_bad_direction() -> None:
    res = _result()
    with pytest.raises(ValueError, match="unit"):
        res.sample("rate", "ours", 1, unit="s")
    with pytest.raises(ValueError, match="better"):
        res.sample("other", "ours", 1, unit="s", better="faster")


def test_json_matches_schema_and_partial_status() -> None:
    res = _result(10)
    res.ratio("ours/base", "rate", "ours", "base", op=">=", threshold=1.5)
    res.missing("routed+pol", framework.Unavailable("the ipset binary"))
    doc = res.to_json(command="l3net bench demo", machine=framework.machine_info(), started=0, duration=1.5)
    jsonschema.validate(doc, framework.RESULT_SCHEMA)
    assert doc["status"] == "partial"
    assert doc["unavailable"] == ["routed+pol: needs the ipset binary: not available"]
    assert doc["metrics"]["rate"]["variants"]["ours"]["median"] == 10.0
    assert doc["passed"] is True
    text = framework.format_table(doc)
    assert "NOT MEASURED: routed+pol" in text
    assert "PASS" in text


def test_machine_info_names_kernel_cores_cpu() -> None:
    info = framework.machine_info()
    assert info["cores"] >= 1
    assert info["kernel"]
    assert info["cpu_model"]


def test_need_binary_finds_a_binary_or_says_it_is_missing() -> None:
    assert Path(framework.need_binary("sh")).name == "sh"
    with pytest.raises(framework.Unavailable, match=r"needs the no-such-binary-xyz binary: not available \(hint x\)"):
        framework.need_binary("no-such-binary-xyz", "hint x")


def test_need_all_names_every_missing_binary() -> None:
    assert [Path(p).name for p in framework.need_all(["sh", "ls"])] == ["sh", "ls"]
    with pytest.raises(framework.Unavailable) as err:
        framework.need_all(["sh", "no-such-binary-a", "no-such-binary-b"], "hint a")
    msg = str(err.value)
    assert msg.startswith("needs the no-such-binary-a binary, the no-such-binary-b binary: not available")
    assert "hint a" in msg and "sh binary" not in msg


def test_benchmarks_import_l3net_plainly() -> None:
    """l3net's own modules are imported, never probed: a missing one is a packaging bug, not 'unavailable'."""
    assert not hasattr(framework, "need_module")
    sources = sorted(Path(benchcli.__file__).parent.glob("*.py"))
    assert {f"{name}.py" for name in BENCHMARKS} <= {p.name for p in sources}
    for path in sources:
        text = path.read_text()
        assert "need_module" not in text and "has not landed" not in text, path.name


def test_every_benchmark_module_declares_itself() -> None:
    for name in BENCHMARKS:
        mod = framework.load(name)
        assert name == mod.NAME
        assert mod.TITLE and mod.NEEDS and callable(mod.run)
    with pytest.raises(KeyError):
        framework.load("nope")


def test_report_renders_results_and_rewrites_only_between_markers(tmp_path: Path) -> None:
    res = _result(10)
    res.ratio("ours/base", "rate", "ours", "base", op=">=", threshold=3.0)
    doc = res.to_json(command="l3net bench demo", machine=framework.machine_info(), started=0, duration=1)
    failed = framework.failure_doc("ipam", "IPAM", status="unavailable", error="needs the etcd binary: not available",
                                   command="l3net bench ipam", quick=False, started=0, duration=0)
    jsonschema.validate(failed, framework.RESULT_SCHEMA)
    text = report.render([doc, failed], tmp_path)
    assert "**FAIL**" in text and "ok, target missed" in text
    assert "**Not measured** (unavailable): needs the etcd binary: not available" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold table\n{report.END}\noutro\n")
    report.write_readme(text, readme)
    out = readme.read_text()
    assert out.startswith("intro\n") and out.endswith(f"{report.END}\noutro\n")
    assert "old table" not in out and "ours/base" in out


def test_cli_command_line_and_argument_parsing() -> None:
    parser = argparse.ArgumentParser()
    benchcli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "ipam", "--quick", "--results-dir", "/tmp/x"])
    assert args.names == ["ipam"] and args.quick
    assert benchcli._command("ipam", args).endswith("bench ipam --quick --results-dir /tmp/x")
    args = parser.parse_args(["bench"])
    assert args.names == ["all"] and not args.quick
    assert benchcli._command("dataplane", args).endswith("bench dataplane")


def test_cli_rejects_unknown_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    benchcli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "nope"])
    assert benchcli.run(args) == 2
    assert "unknown benchmark(s) nope" in capsys.readouterr().err


def test_unavailable_benchmark_writes_reason_and_no_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing external binary (etcd, hidden by an empty PATH) is reported, with exit code 2 and no plot."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "ipam.png").write_bytes(b"stale")
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    lines: list[str] = []
    code = framework.execute("ipam", quick=True, results_dir=results, command="l3net bench ipam", out=lines.append)
    doc = json.loads((results / "ipam.json").read_text())
    jsonschema.validate(doc, framework.RESULT_SCHEMA)
    assert code == 2
    assert doc["status"] == "unavailable" and doc["metrics"] == {}
    assert doc["error"].startswith("needs the etcd binary: not available")
    assert not (results / "ipam.png").exists()
    assert any(line.startswith("FAILED ipam: needs the etcd binary") for line in lines)
    for when in ("before", "after"):  # the host calibration is recorded, its etcd part as the reason it is not
        host = doc["host"][when]
        assert host["interpreter_start_ms"] > 0 and host["python_work_ms"] > 0
        assert "etcd_txn_per_s" not in host
        assert host["unavailable"] == {"etcd_txn_per_s": "needs the etcd binary: not available"}


def test_counting_datastore_counts_writes_and_reads() -> None:
    from l3net.datastore.base import Create, Put
    from l3net.datastore.memory import MemoryDatastore

    ds = CountingDatastore(MemoryDatastore())
    ds.put("/a", b"1")
    rev = ds.create("/b", b"2")
    ds.update("/b", b"3", rev)
    ds.commit([Create("/c", b"4"), Put("/d", b"5")])
    ds.get("/a")
    ds.list("/")
    ds.delete("/a")
    assert ds.writes() == 5 and ds.reads() == 2
    assert ds.keys_written == 6
    with pytest.raises(Exception):  # noqa: B017 - whatever Conflict the store raises, it is counted
        ds.create("/b", b"again")
    assert ds.calls["create"] == 2 and sum(ds.errors.values()) == 1


def test_route_prefixes_are_distinct_blocks() -> None:
    p = prefixes(1000)
    assert len(set(p)) == 1000
    assert p[0] == "10.128.0.0/26" and p[1] == "10.128.0.64/26"


# -- control-plane harness pieces (pure parts) ------------------------------------
def test_route_watch_parses_ip_monitor_lines() -> None:
    from bench.labrig import RouteWatch

    assert RouteWatch.prefix_of("10.244.2.0/26 via 10.0.0.11 dev eth1 proto 76 metric 1024\n") == \
        ("10.244.2.0/26", False)
    assert RouteWatch.prefix_of("blackhole 10.244.3.0/26 proto 76 metric 1024") == ("10.244.3.0/26", False)
    assert RouteWatch.prefix_of("Deleted 10.244.2.0/26 via 10.0.0.11 dev eth1 proto 76") == ("10.244.2.0/26", True)
    assert RouteWatch.prefix_of("10.244.9.7 dev cali0123 scope link") == ("10.244.9.7/32", False)
    assert RouteWatch.prefix_of("default via 10.0.0.1 dev eth1")[0] is None
    assert RouteWatch.prefix_of("local 10.0.0.11 dev eth1 table local proto kernel")[0] == "10.0.0.11/32"
    assert RouteWatch.prefix_of("fe80::/64 dev eth1 proto kernel")[0] is None
    # with `ip -ts`: the stamp is ip's, in local time, and the rest parses as before
    line = "[2026-12-04T14:43:36.220963] blackhole 10.1.0.0/26 proto static \n"
    assert RouteWatch.prefix_of(line) == ("10.1.0.0/26", False)
    stamp, rest = RouteWatch.stamp_of(line)
    assert stamp == pytest.approx(__import__("datetime").datetime(2026, 12, 4, 14, 43, 36, 220963).timestamp())
    assert rest.startswith("blackhole")
    assert RouteWatch.stamp_of("[not a time] 10.0.0.0/8 dev x") == (None, "[not a time] 10.0.0.0/8 dev x")
    assert RouteWatch.stamp_of("10.0.0.0/8 dev x")[0] is None


def test_control_plane_blocks_are_distinct_and_inside_their_range() -> None:
    import ipaddress

    from bench.control_plane import FLOOR_NET, POOL, block

    nets = [block(POOL, i) for i in range(1024)]
    assert len(set(nets)) == 1024 and all(n.subnet_of(ipaddress.ip_network(POOL)) for n in nets)
    assert str(block(FLOOR_NET, 1)) == "10.250.0.64/26"


def test_reflector_scale_client_prefixes_do_not_overlap() -> None:
    from bench.reflector_scale import client_ip, client_prefixes

    allp = [p for i in range(200) for p in client_prefixes(i, 64)]
    assert len(allp) == len(set(allp)) == 200 * 64
    assert client_prefixes(0, 2) == ["10.128.0.0/26", "10.128.0.64/26"]
    assert len({client_ip(i) for i in range(260)}) == 260 and client_ip(0) == "10.1.0.1"


def test_conn_rate_counts_only_our_chains_matches() -> None:
    from bench.conn_rate import count_matches

    text = """*filter
:INPUT ACCEPT [10:1000]
:l3n-fw-abc - [0:0]
[7:420] -A FORWARD -j l3n-FORWARD
[5:300] -A l3n-FORWARD -i cali+ -j l3n-from-wl
[0:0] -A l3n-fw-abc -p tcp --dport 20001 -j ACCEPT
[12:720] -A l3n-fw-abc -j MARK --set-xmark 0x10000/0x10000
COMMIT
"""
    assert count_matches(text) == 17
    assert count_matches(text, "FORWARD") == 7
    assert count_matches("") == 0


@pytest.mark.skipif(__import__("shutil").which("bird") is None, reason="BIRD 2 is not installed")
def test_rendered_bird_configs_parse(tmp_path: Path) -> None:
    """The reflector and speaker configs the benchmarks start BIRD with are valid BIRD 2 (`bird -p`)."""
    import subprocess

    from bench.labrig import bird_rr_conf, bird_speaker_conf

    for name, text in {"rr": bird_rr_conf("10.0.0.3", ["10.0.0.13", "10.0.0.21"], cluster_id="224.0.0.2"),
                       "speaker": bird_speaker_conf("10.0.0.21", "10.0.0.3")}.items():
        conf = tmp_path / f"{name}.conf"
        conf.write_text(text)
        out = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, f"{name}: {out.stderr}\n{text}"


# -- each benchmark's ratio and verdict arithmetic, fed synthetic samples ----------------
def _by_name(res: framework.Result) -> dict[str, dict[str, object]]:
    return {r["name"]: r for r in res.ratios}


def test_conn_rate_ratios_and_verdict_from_synthetic_samples() -> None:
    from bench import conn_rate

    res = framework.Result("conn_rate", "t", quick=False)
    for k in range(10):
        drift = 1.0 + k / 10  # the machine speeds up round by round: pairing cancels it
        for variant, rate in (("none", 1000.0), ("conntrack", 820.0), ("conntrack-rpf", 810.0), ("felix-0", 800.0),
                              ("felix", 850.0), ("bare", 850.0)):
            res.sample("conn_per_s", variant, rate * drift, unit="conn/s")
    conn_rate.declare(res, 1000)
    r = _by_name(res)
    assert r["felix/none new connections per second"]["value"] == pytest.approx(0.85)
    assert r["conntrack/none new connections per second"]["value"] == pytest.approx(0.82)
    assert r["felix-0/conntrack new connections per second"]["value"] == pytest.approx(800 / 820)
    assert r["conntrack-rpf/conntrack new connections per second"]["value"] == pytest.approx(810 / 820)
    assert r["felix-0/conntrack-rpf new connections per second"]["value"] == pytest.approx(800 / 810)
    assert r["felix/conntrack new connections per second"]["value"] == pytest.approx(850 / 820)
    assert r["felix/conntrack new connections per second"]["target"] is None
    assert r["felix/none new connections per second"]["verdict"] == "pass"
    assert r["felix/none new connections per second"]["spread"]["iqr"] == pytest.approx(0.0)
    assert r["felix/bare new connections per second"]["value"] == pytest.approx(1.0)
    assert r["felix-0/none new connections per second"]["target"] is None
    assert [t["name"] for t in res.targets] == ["felix/none new connections per second"]
    slow = framework.Result("conn_rate", "t", quick=False)
    for _k in range(10):
        for variant, rate in (("none", 1000.0), ("felix-0", 800.0), ("felix", 100.0), ("bare", 100.0)):
            slow.sample("conn_per_s", variant, rate, unit="conn/s")
    conn_rate.declare(slow, 1000)
    assert slow.targets[0]["verdict"] == "fail" and slow.targets[0]["value"] == pytest.approx(0.1)


def test_policy_scale_ratios_and_verdicts_from_synthetic_samples() -> None:
    from bench import policy_scale

    res = framework.Result("policy_scale", "t", quick=False)
    for _k in range(10):
        res.sample("full_apply_s", "felix", 0.6, unit="s", better="lower")
        res.sample("full_apply_s", "felix-warm", 0.42, unit="s", better="lower")
        res.sample("full_apply_s", "bare", 0.4, unit="s", better="lower")
        res.sample("compile_s", "cold", 0.1, unit="s", better="lower")
        res.sample("compile_s", "warm", 0.005, unit="s", better="lower")
        res.sample("workload_add_ms", "felix", 20.0, unit="ms", better="lower")
        res.sample("label_change_ms", "felix", 30.0, unit="ms", better="lower")
    policy_scale.declare(res)
    r = _by_name(res)
    cold = r["felix (cold compiler)/bare full apply time"]
    assert cold["value"] == pytest.approx(1.5) and cold["verdict"] == "pass"  # <= 1.5 holds at 1.5
    assert r["felix-warm (warm compiler)/bare full apply time"]["value"] == pytest.approx(1.05)
    assert r["felix-warm (warm compiler)/bare full apply time"]["verdict"] is None
    assert r["cold/warm compile time"]["value"] == pytest.approx(20.0)
    verdicts = {t["name"]: t["verdict"] for t in res.targets}
    assert verdicts["workload_add_ms (p50)"] == "pass" and verdicts["label_change_ms (p50)"] == "fail"


def test_control_plane_like_with_like_ratios_from_synthetic_samples() -> None:
    from bench import control_plane

    res = framework.Result("control_plane", "t", quick=False)
    for k in range(20):
        for variant, total, bgp in (("l3net-rr", 80.0 + k, 40.0), ("bird-rr", 70.0 + k, 40.0),
                                    ("bird-bird", 10.0, 2.0)):
            res.sample("add_to_route_ms", variant, total, unit="ms", better="lower")
            res.sample("origin_to_remote_ms", variant, bgp, unit="ms", better="lower")
    control_plane.declare(res)
    r = _by_name(res)
    p99 = r["l3net-rr ADD / BIRD floor route add, p99"]
    assert p99["value"] == pytest.approx(framework.percentile([80.0 + k for k in range(20)], 99) / 10.0)
    assert p99["rounds"] == 20 and p99["verdict"] == "fail"
    assert r["l3net-rr/BIRD floor BGP path (origin -> remote)"]["value"] == pytest.approx(20.0)
    assert r["l3net-rr/bird-rr BGP path (origin -> remote)"]["value"] == pytest.approx(1.0)
    absolute = {t["name"]: t for t in res.targets if t["unit"] == "ms"}
    assert absolute["l3net-rr p99 ADD -> remote route"]["verdict"] == "pass"
    assert absolute["l3net-rr p99 ADD -> remote route"]["rounds"] == 20

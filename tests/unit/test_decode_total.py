"""Issue 12, the total decode path: no stored value or key can escape a decoder, lose the rest of its
batch or end a consumer. (The real-etcd version, with raw keys, is tests/integration/test_decode_etcd.py.)"""

from __future__ import annotations

import json

import pytest

from bgp.cli import decode as rr_decode
from felix.calc import Model
from l3net import metrics
from l3net.datastore.base import KeyValue
from l3net.errors import ValidationError
from l3net.keys import KeyLayout
from l3net.model.client import ResourceClient
from l3net.model.decode import Invalid, decode
from l3net.model.resource import Resource
from l3net.syncer import KeyUpdate

pytestmark = pytest.mark.unit

KEYS = KeyLayout("/dt/")
DEEP = b"[" * 100_000 + b"]" * 100_000  # json.loads raises RecursionError on this
NOT_UTF8 = b'{"kind": "\xff\xfe"}'


def pool(name: str, cidr: str) -> KeyUpdate:
    res = Resource(kind="IPPool", name=name, spec={"cidr": cidr})
    return KeyUpdate(KEYS.resource("ippools", name), res.to_json(), 5)


def failures(where: str) -> float:
    return metrics.REGISTRY.get_sample_value("l3net_datastore_decode_failures_total", {"where": where}) or 0.0


def test_deep_nesting_is_a_recursion_error_for_plain_json() -> None:
    with pytest.raises(RecursionError):
        json.loads(DEEP)


@pytest.mark.parametrize("bad", [DEEP, NOT_UTF8, b"{not json", b"[]", b'{"kind": "IPPool"}'],
                         ids=["deep", "not-utf8", "bad-json", "not-object", "invalid"])
def test_model_apply_makes_one_bad_value_absent_and_keeps_the_batch(bad: bytes) -> None:
    model = Model(KEYS)
    model.apply([pool("old", "10.1.0.0/16")])
    before = failures("model")
    bad_key = KEYS.resource("ippools", "old")  # a valid value replaced by a bad one: the old one goes too
    n = model.apply([pool("a", "10.2.0.0/16"), KeyUpdate(bad_key, bad, 6), pool("b", "10.3.0.0/16")])
    assert n == 3
    assert sorted(model.pools) == sorted([KEYS.resource("ippools", "a"), KEYS.resource("ippools", "b")])
    assert bad_key in model.invalid and bad_key not in model.resources
    assert failures("model") == before + 1
    # Fixing the value brings the key back; the invalid entry goes.
    model.apply([KeyUpdate(bad_key, pool("old", "10.1.0.0/16").value, 7)])
    assert bad_key in model.pools and bad_key not in model.invalid


def test_model_apply_survives_a_decoder_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    import felix.calc

    def boom(key: str, res: Resource) -> object:
        raise ZeroDivisionError("a bug in one decoder")

    monkeypatch.setattr(felix.calc, "_pool", boom)
    model = Model(KEYS)
    model.apply([pool("a", "10.2.0.0/16"), KeyUpdate(KEYS.affinity("n1", "10.2.0.0/26"), b'{"state":"confirmed"}', 2)])
    assert KEYS.resource("ippools", "a") in model.invalid
    assert "ZeroDivisionError" in model.invalid[KEYS.resource("ippools", "a")]
    assert model.affinities_of("n1")  # the next key of the batch was applied


@pytest.mark.parametrize("bad", [DEEP, NOT_UTF8, b"{not json"], ids=["deep", "not-utf8", "bad-json"])
def test_resource_client_decode_raises_only_validation_errors_naming_the_key(bad: bytes) -> None:
    client = ResourceClient(None, KEYS)  # type: ignore[arg-type]  # decode does no I/O
    key = KEYS.resource("bgppeers", "p1")
    with pytest.raises(ValidationError) as info:
        client.decode(KeyValue(key, bad, 3))
    assert key in str(info.value)


def test_reflector_decode_is_none_and_counted_for_any_bad_value() -> None:
    client = ResourceClient(None, KEYS)  # type: ignore[arg-type]
    before = failures("resource")
    for bad in (DEEP, NOT_UTF8, b"{"):
        assert rr_decode(client, KEYS.resource("nodes", "n1"), bad, 3) is None
    assert failures("resource") == before + 3


def test_registration_rewrites_an_own_node_that_does_not_decode() -> None:
    from felix.registration import register_node
    from l3net.datastore.memory import MemoryDatastore

    ds = MemoryDatastore()
    key = KEYS.resource("nodes", "n1")
    ds.put(key, DEEP)
    res = register_node(ds, KEYS, "n1", "10.0.0.1/24", None)
    assert res.spec == {"bgp": {"ipv4Address": "10.0.0.1/24"}}
    stored = ResourceClient(ds, KEYS).decode(ds.get(key))  # type: ignore[arg-type]
    assert stored.spec == res.spec


# One stored value, every reader: l3netctl's client, the agent's model, the reflector (issue 14).
_GOOD = Resource(kind="IPPool", name="p", spec={"cidr": "10.9.0.0/16"}).to_json()
_OTHER_NAME = Resource(kind="IPPool", name="q", spec={"cidr": "10.9.0.0/16"}).to_json()
_OTHER_KIND = Resource(kind="Node", name="p").to_json()
_BAD_SPEC = Resource(kind="IPPool", name="p", spec={"cidr": "10.9.0.1/16"}).to_json()


@pytest.mark.parametrize(("raw", "valid"), [
    (_GOOD, True), (_OTHER_NAME, False), (_OTHER_KIND, False), (_BAD_SPEC, False), (DEEP, False),
    (NOT_UTF8, False), (b"{", False), (b"[]", False), (b"null", False),
], ids=["good", "other-name", "other-kind", "bad-spec", "deep", "not-utf8", "bad-json", "list", "null"])
def test_every_reader_takes_exactly_what_the_one_decode_takes(raw: bytes, valid: bool) -> None:
    key = KEYS.resource("ippools", "p")
    got = decode(KEYS, key, raw, 9)
    assert isinstance(got, Resource) == valid and isinstance(got, Invalid) != valid
    if isinstance(got, Resource):
        assert got.resource_version == 9 and got.name == "p"
    else:
        assert all(key in str(e) for e in got.errors), got
    client = ResourceClient(None, KEYS)  # type: ignore[arg-type]  # decode does no I/O
    try:
        client.decode(KeyValue(key, raw, 9))
        client_ok = True
    except ValidationError:
        client_ok = False
    model = Model(KEYS)
    model.apply([KeyUpdate(key, raw, 9)])
    assert client_ok == valid
    assert (key in model.pools) == valid and (key in model.invalid) != valid
    assert (rr_decode(client, key, raw, 9) is not None) == valid

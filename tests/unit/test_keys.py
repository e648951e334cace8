import pytest

from l3net.keys import KeyLayout, cidr_token, token_cidr

pytestmark = pytest.mark.unit


def test_cidr_token_round_trip() -> None:
    assert cidr_token("10.0.0.64/26") == "10.0.0.64-26"
    assert token_cidr("10.0.0.64-26") == "10.0.0.64/26"
    assert token_cidr(cidr_token("fd00::40/122")) == "fd00::40/122"


def test_resource_keys_parse_back() -> None:
    keys = KeyLayout("/x/")
    assert keys.parse_resource(keys.resource("ippools", "p1")) == ("ippools", None, "p1")
    assert keys.parse_resource(keys.resource("networkpolicies", "n", "ns")) == ("networkpolicies", "ns", "n")
    assert keys.parse_resource("/y/resources/ippools/p1") is None
    assert keys.parse_affinity(keys.affinity("node-1", "10.1.0.0/26")) == ("node-1", "10.1.0.0/26")


def test_prefix_must_be_slash_delimited() -> None:
    with pytest.raises(ValueError, match="prefix"):
        KeyLayout("l3net")


@pytest.mark.parametrize("prefix", ["/l3net/v1/", "/a/", "/calico~/"])
def test_every_key_an_agent_reads_sorts_before_the_end_of_its_feed(prefix: str) -> None:
    """The agent lists and watches one range, from the prefix up to ``agent_view_end``: every key its model
    tracks must fall inside (the config and IPAM directories and every resource kind), every status key
    outside."""
    from felix.config import config_key
    from l3net.datastore.base import in_range
    from l3net.model.resource import KINDS_BY_PLURAL

    k = KeyLayout(prefix)
    read = [config_key(k, "global", "LogLevel"), config_key(k, "node", "LogLevel", node="zz-node"), k.ipam_config,
            k.block("10.0.0.0/26"), k.affinity("zz-node", "10.0.0.0/26"), k.handle("zz"), k.sticky("ns/pod"),
            *(k.resource(plural, "zz", "zz") for plural in KINDS_BY_PLURAL)]
    for key in read:
        assert in_range(key, k.prefix, k.agent_view_end), key
    for what in ("agent", "bgp", "bfd"):
        assert not in_range(k.node_status("aa-node", what), k.prefix, k.agent_view_end)

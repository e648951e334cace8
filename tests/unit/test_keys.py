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

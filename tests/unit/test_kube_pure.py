"""Pure parts of issue 15: the stand-in's patches, selectors and protobuf reader; translation; pod annotations."""

from __future__ import annotations

import json

import pytest

from l3net.cni.errors import CNIError
from l3net.cni.kubepod import pod_info
from l3net.kube.translate import MARK, endpoint_fields, namespace_doc, pod_service_account, policy_doc, service_doc
from l3net.lab.kubeapi.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from l3net.lab.kubeapi.protobuf import decode_body
from l3net.lab.kubeapi.selectors import SelectorError, field_selector, label_selector
from l3net.lab.kubeapi.store import ApiError, Store
from l3net.model.validation import resource_from_document

pytestmark = pytest.mark.unit

POD = {"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]},
                               {"name": "b", "image": "x"}]}}


def test_strategic_merge_merges_lists_by_key_and_honours_directives() -> None:
    patch = {"metadata": {"labels": {"app": None, "tier": "x"}},
             "spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                      "containers": [{"name": "b", "image": "y"}, {"name": "a", "$patch": "delete"}]}}
    out = strategic_merge_patch(POD, patch)
    assert out["metadata"]["labels"] == {"tier": "x"}
    assert out["spec"]["containers"] == [{"name": "b", "image": "y"}]
    assert POD["spec"]["containers"][1]["image"] == "x"  # the input is not changed
    with pytest.raises(PatchError, match="merge key"):
        strategic_merge_patch(POD, {"spec": {"containers": [{"image": "z"}]}})


def test_merge_and_json_patch() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}
    doc = {"metadata": {"labels": {"a/b": "1"}}, "l": [1, 2]}
    out = json_patch(doc, [{"op": "remove", "path": "/metadata/labels/a~1b"}, {"op": "add", "path": "/l/-", "value": 3},
                           {"op": "replace", "path": "/l/0", "value": 9}, {"op": "test", "path": "/l/1", "value": 2}])
    assert out == {"metadata": {"labels": {}}, "l": [9, 2, 3]}
    with pytest.raises(PatchError, match="does not exist"):
        json_patch(doc, [{"op": "remove", "path": "/nope"}])
    with pytest.raises(PatchError, match="test failed"):
        json_patch(doc, [{"op": "test", "path": "/l/0", "value": 5}])


@pytest.mark.parametrize(("sel", "labels", "want"), [
    ("a=1,b!=2", {"a": "1", "b": "3"}, True),
    ("a==1", {"a": "2"}, False),
    ("a in (1, 2),!c", {"a": "2"}, True),
    ("a notin (1,2)", {"a": "1"}, False),
    ("a notin (1,2)", {}, True),
    ("example.com/tier", {"example.com/tier": ""}, True),
])
def test_label_selectors(sel: str, labels: dict[str, str], want: bool) -> None:
    assert label_selector(sel)(labels) is want


def test_bad_selectors_are_errors_not_match_all() -> None:
    for bad in ("a in (1", "a ~ b", "!a in (x)"):
        with pytest.raises(SelectorError):
            label_selector(bad)
    with pytest.raises(SelectorError, match="not supported"):
        field_selector("spec.hostNetwork=true")
    assert field_selector("spec.nodeName=n1,metadata.name!=x")({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}})


def test_store_refuses_bad_input_and_changes_nothing() -> None:
    st = Store()
    rt = st.rtype("pods")
    rv = st.resource_version
    for body, code in (({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c"}]}}, 422),
                       ({"metadata": {"name": "p"}, "spec": {}}, 422),
                       ({"metadata": {"name": "p", "labels": {"k": "v v"}}, "spec": {"containers": [{}]}}, 422),
                       ({"kind": "Node", "metadata": {"name": "p"}}, 400)):
        with pytest.raises(ApiError) as err:
            st.create(rt, "default", body)
        assert err.value.code == code
    with pytest.raises(ApiError) as err:
        st.create(rt, "missing", {**POD, "metadata": {"name": "p"}})
    assert err.value.code == 404 and "missing" in err.value.message
    assert st.resource_version == rv


def test_protobuf_namespace_and_delete_options() -> None:
    def field(num: int, payload: bytes) -> bytes:
        return bytes([num << 3 | 2, len(payload)]) + payload

    label = field(1, b"team") + field(2, b"a")
    meta = field(1, b"shop") + field(11, label)
    raw = b"k8s\x00" + field(1, field(1, b"v1") + field(2, b"Namespace")) + field(2, field(1, meta))
    assert decode_body(raw) == {"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": "shop", "labels": {"team": "a"}}}
    other = b"k8s\x00" + field(1, field(1, b"v1") + field(2, b"Pod")) + field(2, b"")
    with pytest.raises(ApiError) as err:
        decode_body(other)
    assert err.value.code == 415
    with pytest.raises(ApiError):
        decode_body(b"k8s\x00\x0a\x7f")  # truncated


def test_reserved_prefixes_match_the_policy_engine() -> None:
    from l3net.kube.translate import RESERVED_PREFIXES
    from policy.model import RESERVED_LABEL_PREFIXES

    assert set(RESERVED_LABEL_PREFIXES) <= set(RESERVED_PREFIXES)


def test_endpoint_fields_and_documents() -> None:
    pod = json.loads(json.dumps(POD))
    pod["metadata"]["labels"]["projectcalico.org/namespace"] = "spoofed"
    pod["metadata"]["labels"]["pcns.team"] = "admins"  # a pod cannot claim another namespace's labels
    pod["metadata"]["labels"]["pcsa.role"] = "spoofed"
    sa = {"metadata": {"labels": {"role": "bot"}}}
    labels, ports, sa_name = endpoint_fields(pod, sa)
    assert labels == {"app": "web", "pcsa.role": "bot", "projectcalico.org/namespace": "ns",
                      "projectcalico.org/orchestrator": "k8s", "projectcalico.org/serviceaccount": "default"}
    assert ports == [{"name": "http", "protocol": "TCP", "port": 80}] and sa_name == "default"
    assert namespace_doc({"metadata": {"name": "x"}})["metadata"]["annotations"] == {MARK: "kube-controller"}
    assert policy_doc({"metadata": {"name": "p", "namespace": "n"}, "spec": {"podSelector": {}}})["spec"] == {
        "podSelector": {}}


@pytest.mark.parametrize(("annotations", "message"), [
    ({"cni.projectcalico.org/ipAddrs": "10.0.0.1"}, "JSON list"),
    ({"cni.projectcalico.org/ipAddrs": '["10.0.0.300"]'}, "not an IP"),
    ({"cni.projectcalico.org/ipAddrs": '["fd00::1"]'}, "IPv6"),
    ({"cni.projectcalico.org/ipAddrs": '["10.0.0.1", "10.0.0.2"]'}, "exactly one"),
    ({"cni.projectcalico.org/ipv4pools": "[1]"}, "ipv4pools"),
    ({"l3net.io/sticky-address": "yes"}, "sticky-address"),
    ({"l3net.io/sticky-address": "true", "cni.projectcalico.org/ipAddrs": '["10.0.0.1"]'}, "cannot be combined"),
])
def test_pod_annotations_refused_with_their_name(annotations: dict[str, str], message: str) -> None:
    pod = json.loads(json.dumps(POD))
    pod["metadata"]["annotations"] = annotations
    with pytest.raises(CNIError, match=message):
        pod_info(pod, None)


def test_service_doc_keeps_what_advertisement_reads_and_validates() -> None:
    svc = {"metadata": {"name": "web", "namespace": "shop", "labels": {"a": "b"}, "uid": "u1"},
           "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                    "externalIPs": ["192.0.2.7"], "externalTrafficPolicy": "Local", "selector": {"app": "web"},
                    "ports": [{"port": 80, "targetPort": 8080}], "sessionAffinity": "None"},
           "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.5"}, {"hostname": "lb.example"}]}}}
    res = resource_from_document(service_doc(svc))
    assert (res.kind, res.namespace, res.name, res.annotations[MARK]) == ("Service", "shop", "web", "kube-controller")
    assert res.spec == {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "externalIPs": ["192.0.2.7"],
                        "loadBalancerIPs": ["198.51.100.5"], "externalTrafficPolicy": "Local",
                        "selector": {"app": "web"}}
    # A headless Service and one without status or selector: only what is there.
    bare = {"metadata": {"name": "db", "namespace": "shop"}, "spec": {"clusterIP": "None"}}
    assert resource_from_document(service_doc(bare)).spec == {"clusterIP": "None"}


def test_pod_annotations_accepted() -> None:
    pod = json.loads(json.dumps(POD))
    pod["metadata"]["annotations"] = {"cni.projectcalico.org/ipv4pools": '["pool-a", "10.9.0.0/16"]',
                                      "l3net.io/sticky-address": "true"}
    info = pod_info(pod, None)
    assert info.pools == ("pool-a", "10.9.0.0/16") and info.sticky_key == "ns/p" and info.ips == ()


def test_a_pods_service_account_is_named_by_either_field_and_its_endpoint_labels_agree() -> None:
    """serviceAccountName, else the deprecated serviceAccount, else default: the name the controller looks
    the account up by is the one the endpoint's labels carry."""
    cases = [({"serviceAccountName": "a", "serviceAccount": "b"}, "a"), ({"serviceAccount": "b"}, "b"),
             ({}, "default"), ({"serviceAccountName": ""}, "default")]
    for spec, name in cases:
        pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [{"name": "c"}], **spec}}
        assert pod_service_account(pod) == name
        labels, _, sa_name = endpoint_fields(pod, {"metadata": {"name": name, "labels": {"k": "v"}}})
        assert sa_name == name and labels["projectcalico.org/serviceaccount"] == name and labels["pcsa.k"] == "v"
    assert pod_service_account({"spec": "not a mapping"}) == "default"

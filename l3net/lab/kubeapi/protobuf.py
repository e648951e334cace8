"""Decoding of the few protobuf bodies ``kubectl`` sends to the lab's Kubernetes API stand-in.

Typed clients in ``kubectl`` (``kubectl create namespace``, ``create serviceaccount``,
delete options) send ``application/vnd.kubernetes.protobuf`` whatever the server
prefers: the ``k8s\\0`` magic, then a ``runtime.Unknown`` envelope whose ``raw``
field holds the object. The stand-in reads the fields of those kinds it serves
(ObjectMeta's name, namespace, labels, annotations; DeleteOptions' preconditions
and dryRun) and answers any other protobuf body with 415.
"""

from __future__ import annotations

from typing import Any

from l3net.lab.kubeapi.store import ApiError

__all__ = ["decode_body"]

MAGIC = b"k8s\x00"


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf):
            raise ApiError(400, "BadRequest", "protobuf body: truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ApiError(400, "BadRequest", "protobuf body: varint too long")


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message; only varint and length-delimited wire types occur here."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            val, i = _varint(buf, i)
            out.append((num, val))
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ApiError(400, "BadRequest", "protobuf body: truncated field")
            out.append((num, buf[i:i + n]))
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ApiError(400, "BadRequest", f"protobuf body: unsupported wire type {wire}")
    return out


def _text(v: int | bytes) -> str:
    if not isinstance(v, bytes):
        raise ApiError(400, "BadRequest", "protobuf body: expected a string field")
    return v.decode("utf-8")


def _map_entry(v: int | bytes) -> tuple[str, str]:
    entry = dict(_fields(v if isinstance(v, bytes) else b""))
    return _text(entry.get(1, b"")), _text(entry.get(2, b""))


def _object_meta(buf: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for num, v in _fields(buf):
        if num == 1:
            meta["name"] = _text(v)
        elif num == 2:
            meta["generateName"] = _text(v)
        elif num == 3:
            meta["namespace"] = _text(v)
        elif num == 6:
            meta["resourceVersion"] = _text(v)
        elif num in (11, 12):
            k, val = _map_entry(v)
            meta.setdefault("labels" if num == 11 else "annotations", {})[k] = val
    return meta


def _delete_options(buf: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for num, v in _fields(buf):
        if num == 2 and isinstance(v, bytes):
            pre = dict(_fields(v))
            if 2 in pre:
                out["preconditions"] = {"resourceVersion": _text(pre[2])}
        elif num == 5:
            out.setdefault("dryRun", []).append(_text(v))
    return out


def decode_body(raw: bytes) -> dict[str, Any]:
    if not raw.startswith(MAGIC):
        raise ApiError(400, "BadRequest", "protobuf body without the k8s magic prefix")
    env = dict(_fields(raw[len(MAGIC):]))
    type_meta = dict(_fields(env.get(1, b"") if isinstance(env.get(1), bytes) else b""))
    api_version, kind = _text(type_meta.get(1, b"")), _text(type_meta.get(2, b""))
    body = env.get(2, b"")
    body = body if isinstance(body, bytes) else b""
    if kind == "DeleteOptions":
        return _delete_options(body)
    if kind in ("Namespace", "ServiceAccount"):
        obj = dict(_fields(body))
        meta = obj.get(1, b"")
        return {"apiVersion": api_version, "kind": kind,
                "metadata": _object_meta(meta if isinstance(meta, bytes) else b"")}
    raise ApiError(415, "UnsupportedMediaType", f"protobuf bodies of kind {kind!r} are not supported by the lab's "
                   "API stand-in; send JSON (kubectl apply -f)")

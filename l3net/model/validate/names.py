"""l3net.model.validate.names: Kubernetes names and the key/value maps of ``metadata``.

Owns the DNS-1123 label and subdomain rules (resource names, namespaces, nodes), the
qualified-name rule for label and annotation keys (optional DNS-subdomain prefix and ``/``, then a
name of at most 63 alphanumerics, ``-``, ``_`` or ``.``), the label value rule (empty, or at most 63
characters of the same alphabet) and the annotation rules (free-text string values, at most
256 KiB of keys and values in total, as the Kubernetes API server enforces).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from l3net.model.validate.checker import BAD, Check, Checker, format_path, typename

_log = logging.getLogger(__name__)

__all__ = ["MAX_ANNOTATIONS_BYTES", "annotation_map", "dns_name", "dns_reason", "label_key", "label_map",
           "label_value"]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")

# Kubernetes' TotalAnnotationSizeLimitB: the UTF-8 bytes of every key and value together.
MAX_ANNOTATIONS_BYTES = 256 * 1024


def dns_reason(value: str, label: bool) -> str | None:
    """Why ``value`` is not a DNS-1123 label (``label``) or subdomain, or None when it is one."""
    limit = 63 if label else 253
    rx = _DNS_LABEL if label else _DNS_SUBDOMAIN
    if not value:
        return "must not be empty"
    if len(value) > limit:
        return f"must be at most {limit} characters"
    if not rx.fullmatch(value):
        kind = "DNS-1123 label" if label else "DNS-1123 subdomain"
        allowed = "lowercase letters, digits and '-'" if label else "lowercase letters, digits, '-' and '.'"
        return (f"{value!r} is not a valid {kind}: use {allowed}, starting and ending with a letter or digit")
    return None


def dns_name(label: bool = False) -> Check:
    """A string that is a DNS-1123 label (``label``) or subdomain."""

    def check(c: Checker, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            return c.error(path, f"must be a string, not {typename(value)}")
        reason = dns_reason(value, label)
        return c.error(path, reason) if reason else value

    return check


def _key_reason(key: str, noun: str) -> str | None:
    """Why ``key`` is not a qualified name; ``noun`` ("label", "annotation") names the map in the reason."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return f"{noun} key {key!r} has an empty prefix before '/'"
        reason = dns_reason(prefix, label=False)
        if reason:
            return f"{noun} key prefix: {reason}"
    if not name:
        return f"{noun} key {key!r} has an empty name"
    if len(name) > 63:
        return f"{noun} key name {name!r} is longer than 63 characters"
    if not _LABEL_NAME.fullmatch(name):
        return (f"{noun} key {key!r} is invalid: the name must be alphanumeric, '-', '_' or '.', "
                "starting and ending with a letter or digit (optional DNS prefix and '/')")
    return None


def _label_value_reason(value: str) -> str | None:
    if len(value) > 63:
        return f"label value {value[:20]!r}... is longer than 63 characters"
    if value and not _LABEL_NAME.fullmatch(value):
        return (f"label value {value!r} is invalid: alphanumeric, '-', '_' or '.', "
                "starting and ending with a letter or digit")
    return None


def label_key(c: Checker, value: Any, path: str) -> Any:
    """A label key (a qualified name), e.g. in a LabelSelector's ``matchExpressions[].key``."""
    if not isinstance(value, str):
        return c.error(path, f"must be a string, not {typename(value)}")
    reason = _key_reason(value, "label")
    return c.error(path, reason) if reason else value


def label_value(c: Checker, value: Any, path: str) -> Any:
    """A label value: a string, empty or a short name (YAML ``true``/``1`` must be quoted)."""
    if not isinstance(value, str):
        return c.error(path, f"label value must be a string, not {typename(value)} (quote it)")
    reason = _label_value_reason(value)
    return c.error(path, reason) if reason else value


def _annotation_value(c: Checker, value: Any, path: str) -> Any:
    # Annotation values are free text: any string, including empty and multi-line.
    if not isinstance(value, str):
        return c.error(path, f"annotation value must be a string, not {typename(value)}")
    return value


def _key_value_map(c: Checker, value: Any, path: str, noun: str, shape: str, check_value: Check) -> Any:
    """A map of qualified-name keys to values passing ``check_value``; every bad entry is reported."""
    if not isinstance(value, dict):
        return c.error(path, f"must be an object of {shape}, not {typename(value)}")
    bad = False
    for k, v in value.items():
        p = format_path(path, k)
        if not isinstance(k, str):
            bad = True
            c.error(p, f"{noun} key must be a string, not {typename(k)}")
            continue
        reason = _key_reason(k, noun)
        if reason:
            bad = True
            c.error(p, reason)
        if check_value(c, v, p) is BAD:
            bad = True
    return BAD if bad else dict(value)


def label_map(c: Checker, value: Any, path: str) -> Any:
    """``metadata.labels`` and ``matchLabels``: label keys to label values."""
    return _key_value_map(c, value, path, "label", "label key: value", label_value)


def annotation_map(c: Checker, value: Any, path: str) -> Any:
    """``metadata.annotations``: qualified-name keys to free-text values, 256 KiB in total at most."""
    out = _key_value_map(c, value, path, "annotation", "key: value", _annotation_value)
    if out is BAD:
        return BAD
    # surrogatepass: a lone surrogate from JSON is counted, not raised on.
    size = sum(len(k.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass"))
               for k, v in out.items())
    if size > MAX_ANNOTATIONS_BYTES:
        return c.error(path, f"annotations total {size} bytes; the limit is {MAX_ANNOTATIONS_BYTES} (256 KiB)")
    return out

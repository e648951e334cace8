"""l3net.cli.ctl: ``l3netctl``, the operator CLI (the calicoctl of l3net).

Exit codes: 0 ok; 1 invalid input, missing or conflicting resource (every
field error printed to stderr as ``document: path: reason``); 2 datastore
unreachable or failing (the endpoint named, no traceback).

Command groups owned elsewhere (``ipam`` in ``l3net.ipam.cli``, ``node`` in
``bgp.status_cli``) register themselves through ``add_parser(subparsers)``; this module is one of
the two composition roots allowed to import a layer above the ``l3net`` core (docs/interfaces.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from importlib import metadata
from types import ModuleType
from typing import Any, TextIO

import yaml

import bgp.status_cli
import l3net.ipam.cli
from l3net.cli.common import EXIT_INVALID, EXIT_OK, EXIT_UNREACHABLE, add_datastore_args, open_datastore
from l3net.errors import Conflict, DatastoreError, DatastoreUnavailable, FieldError, ValidationError
from l3net.model.bgp_specs import bgp_peer_spec
from l3net.model.bgpfilter_spec import bgpfilter_spec
from l3net.model.client import NotFound, ResourceClient
from l3net.model.documents import load_named_documents
from l3net.model.resource import KINDS, Resource, kind_info
from l3net.model.validate.bgp import REDACTED

_log = logging.getLogger(__name__)

PROG = "l3netctl"

# group -> module providing add_parser(subparsers) that sets args.func(args) -> int
GROUPS: dict[str, ModuleType] = {
    "ipam": l3net.ipam.cli,
    "node": bgp.status_cli,
}

# -- output -------------------------------------------------------------------------
def format_field_error(err: FieldError) -> str:
    parts = [p for p in (err.document, err.path) if p]
    return ": ".join([*parts, err.reason])


def _columns(kind: str) -> list[tuple[str, Callable[[Resource], str]]]:
    def spec(*path: str, default: str = "") -> Callable[[Resource], str]:
        # Raw on purpose: a column that echoes a stored field shows it as the user wrote it, like ``-o yaml`` (a
        # typed spec re-serialises: IPv6 in canonical form, durations in seconds, a node address without its
        # prefix length). Columns that interpret the spec (a peer's scope, a filter's rules) read typed specs.
        def get(r: Resource) -> str:
            v: Any = r.spec
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None
            if v is None:
                return default
            if isinstance(v, bool):
                return str(v).lower()
            if isinstance(v, list):
                return ",".join(str(x) for x in v)
            return str(v)
        return get

    def labels(r: Resource) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(r.labels.items())) or "<none>"

    def pod_selector(r: Resource) -> str:
        sel = r.spec.get("podSelector") or {}   # raw, like spec(): the selector as written, not as compiled
        parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
        parts += [f"{e['key']} {e['operator']} {','.join(e.get('values', []))}".strip()
                  for e in sel.get("matchExpressions", [])]
        return ",".join(parts) or "<all>"

    def peer_scope(r: Resource) -> str:
        peer = bgp_peer_spec(r)
        return peer.node or peer.node_selector or "(global)"

    def filter_rules(direction: str, version: int) -> Callable[[Resource], str]:
        return lambda r: str(len(bgpfilter_spec(r).rules(direction, version)))

    table: dict[str, list[tuple[str, Callable[[Resource], str]]]] = {
        "IPPool": [("CIDR", spec("cidr")), ("BLOCKSIZE", spec("blockSize")), ("NAT", spec("natOutgoing",
                   default="false")), ("DISABLED", spec("disabled", default="false")),
                   ("SELECTOR", spec("nodeSelector"))],
        "IPReservation": [("RESERVED", spec("reservedCIDRs"))],
        "FelixConfiguration": [("LOGSEVERITY", spec("logSeverityScreen")),
                               ("ROUTEREFRESH", spec("routeRefreshInterval"))],
        "Node": [("ASN", spec("bgp", "asNumber", default="(global)")), ("IPV4", spec("bgp", "ipv4Address")),
                 ("IPV6", spec("bgp", "ipv6Address")), ("RR-CLUSTER", spec("bgp", "routeReflectorClusterID"))],
        "BGPConfiguration": [("LOGSEVERITY", spec("logSeverityScreen")),
                             ("MESHENABLED", spec("nodeToNodeMeshEnabled", default="true")),
                             ("ASNUMBER", spec("asNumber"))],
        "BGPPeer": [("PEERIP", spec("peerIP")), ("NODE", peer_scope), ("ASN", spec("asNumber")),
                    ("PEERSELECTOR", spec("peerSelector"))],
        "BGPFilter": [(f"{direction.upper()}V{version}-RULES", filter_rules(direction, version))
                      for direction, version in (("import", 4), ("export", 4), ("import", 6), ("export", 6))],
        "WorkloadEndpoint": [("WORKLOAD", spec("workload")), ("NODE", spec("node")),
                             ("NETWORKS", spec("ipNetworks")), ("INTERFACE", spec("interfaceName"))],
        "Namespace": [("LABELS", labels)],
        "NetworkPolicy": [("POD-SELECTOR", pod_selector), ("TYPES", spec("policyTypes"))],
        "GlobalNetworkPolicy": [("ORDER", spec("order")), ("SELECTOR", spec("selector")),
                                ("TYPES", spec("types"))],
        "CalicoNetworkPolicy": [("ORDER", spec("order")), ("SELECTOR", spec("selector")),
                                ("TYPES", spec("types"))],
        "NetworkSet": [("NETS", spec("nets")), ("LABELS", labels)],
        "GlobalNetworkSet": [("NETS", spec("nets")), ("LABELS", labels)],
        "HostEndpoint": [("NODE", spec("node")), ("INTERFACE", spec("interfaceName")),
                         ("EXPECTED-IPS", spec("expectedIPs")), ("LABELS", labels)],
        "Service": [("CLUSTER-IP", spec("clusterIP")), ("EXTERNAL-IPS", spec("externalIPs")),
                    ("LB-IPS", spec("loadBalancerIPs")), ("TRAFFIC-POLICY", spec("externalTrafficPolicy"))],
    }
    return table.get(kind, [])


def render_table(kind: str, resources: list[Resource], all_namespaces: bool) -> str:
    cols: list[tuple[str, Callable[[Resource], str]]] = []
    if all_namespaces and KINDS[kind].namespaced:
        cols.append(("NAMESPACE", lambda r: r.namespace or ""))
    cols.append(("NAME", lambda r: r.name))
    cols += _columns(kind)
    rows = [[h for h, _ in cols]] + [[fn(r) for _, fn in cols] for r in resources]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows) + "\n"


# Fields that hold a secret value, per kind: printed as REDACTED (applying that back is refused).
SECRET_FIELDS = {"BGPPeer": ("password",), "BGPConfiguration": ("nodeMeshPassword",)}


def _document(res: Resource) -> dict[str, Any]:
    doc = res.to_document()
    for fname in SECRET_FIELDS.get(res.kind, ()):
        secret = (doc.get("spec") or {}).get(fname)
        if isinstance(secret, dict) and "value" in secret:
            doc["spec"][fname] = {**secret, "value": REDACTED}
    return doc


def render(resources: list[Resource], output: str, kind: str, single: bool, all_namespaces: bool) -> str:
    if output == "table":
        return render_table(kind, resources, all_namespaces)
    data: Any = (_document(resources[0]) if single else
                 {"apiVersion": "v1", "kind": "List", "items": [_document(r) for r in resources]})
    if output == "json":
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


# -- commands -----------------------------------------------------------------------
def _read_source(path: str) -> tuple[str, str]:
    if path == "-":
        raw = sys.stdin.buffer.read()
        source = "<stdin>"
    else:
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise ValidationError(FieldError(path="-f", reason=f"cannot read {path}: {exc.strerror}")) from None
        source = path
    try:
        return raw.decode("utf-8"), source
    except UnicodeDecodeError as exc:
        raise ValidationError(FieldError(path="", reason=f"not UTF-8 text (byte {exc.start})",
                                         document=source)) from None


def _client(args: argparse.Namespace) -> ResourceClient:
    ds, keys = open_datastore(args)
    return ResourceClient(ds, keys)


def cmd_write(args: argparse.Namespace) -> int:
    text, source = _read_source(args.filename)
    named = load_named_documents(text, source)  # validates everything before touching the datastore
    resources = [r for _, r in named]
    if not resources:
        print(f"{PROG}: no resources found in {source}", file=sys.stderr)
        return EXIT_INVALID
    client = _client(args)
    verb = args.command
    try:
        done = _write(client, verb, resources, args)
    except ValidationError as exc:
        # errors found against the store name the resource; name the document it came from
        where = {r.ref: name for name, r in named}
        raise ValidationError([FieldError(e.path, e.reason, where.get(e.document, e.document))
                               for e in exc.errors]) from None
    past = {"apply": "applied", "create": "created", "replace": "replaced", "delete": "deleted"}[verb]
    print(f"Successfully {past} {len(done)} resource(s): " + ", ".join(r.ref for r in done))
    return EXIT_OK


def _write(client: ResourceClient, verb: str, resources: list[Resource], args: argparse.Namespace) -> list[Resource]:
    if verb == "apply":
        done = client.apply(resources)
    elif verb == "create":
        done = client.create(resources)
    elif verb == "replace":
        done = client.replace(resources)
    else:
        done = client.delete(resources, ignore_missing=args.skip_not_exists)
    return done


def cmd_delete(args: argparse.Namespace) -> int:
    if args.filename:
        if args.kind:
            raise ValidationError(FieldError(path="delete", reason="give either -f FILE or KIND NAME, not both"))
        return cmd_write(args)
    if not args.kind or not args.name:
        raise ValidationError(FieldError(path="delete", reason="need -f FILE, or KIND and NAME"))
    info = _kind_arg(args.kind)
    res = _client(args).delete_one(info.kind, args.name, args.namespace)
    print(f"Successfully deleted 1 resource(s): {res.ref}")
    return EXIT_OK


def _kind_arg(kind: str) -> Any:
    info = kind_info(kind)
    if info is None:
        raise ValidationError(FieldError(path="KIND", reason=f"unknown kind {kind!r}; expected one of "
                                                             + ", ".join(sorted(KINDS))))
    return info


def cmd_get(args: argparse.Namespace) -> int:
    info = _kind_arg(args.kind)
    client = _client(args)
    namespace = None if args.all_namespaces else (args.namespace or "default")
    if args.name:
        res = client.get(info.kind, args.name, namespace)
        if res is None:
            ns = f"{namespace}/" if info.namespaced else ""
            raise NotFound(f"{info.kind}/{ns}{args.name}")
        found = [res]
    else:
        found = client.list(info.kind, namespace if info.namespaced else None)
    sys.stdout.write(render(found, args.output, info.kind, single=bool(args.name),
                            all_namespaces=bool(args.all_namespaces)))
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    try:
        version = metadata.version("l3net")
    except metadata.PackageNotFoundError:
        version = "unknown"
    print(f"Client Version:    {version}")
    print(f"Python:            {sys.version.split()[0]}")
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is invalid input (exit 1): exit 2 means the datastore is unreachable."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Manage l3net resources in etcd (the calicoctl of "
                                     "l3net). Exit codes: 0 ok, 1 invalid input, 2 datastore unreachable.")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING or ERROR (default WARNING)")
    add_datastore_args(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_datastore_args(p)
        return p

    for verb, text in (("apply", "Create or update resources from a file"),
                       ("create", "Create resources from a file (fails if any exists)"),
                       ("replace", "Replace resources from a file (fails if any is missing)")):
        p = command(verb, text)
        p.add_argument("-f", "--filename", required=True, help="YAML or JSON file, or - for stdin")
        p.set_defaults(func=cmd_write)

    p = command("delete", "Delete resources from a file, or one resource by kind and name")
    p.add_argument("kind", nargs="?", metavar="KIND", help="resource kind (e.g. ippool, bgppeer, networkpolicy)")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("-f", "--filename", help="YAML or JSON file, or - for stdin")
    p.add_argument("-n", "--namespace", help="namespace of a namespaced kind (default: default)")
    p.add_argument("--skip-not-exists", action="store_true", help="with -f: ignore resources that do not exist")
    p.set_defaults(func=cmd_delete)

    p = command("get", "Show resources")
    p.add_argument("kind", metavar="KIND", help="resource kind: " + ", ".join(i.plural for i in KINDS.values()))
    p.add_argument("name", nargs="?", metavar="NAME")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="namespace (default: default)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table", help="default table")
    p.set_defaults(func=cmd_get)

    p = command("version", "Show the version")
    p.set_defaults(func=cmd_version)

    for module in GROUPS.values():
        module.add_parser(sub)
    return parser


def _print_errors(errors: list[FieldError], out: TextIO) -> None:
    for err in errors:
        print(format_field_error(err), file=out)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_INVALID
    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:
        _print_errors(exc.errors, sys.stderr)
        print(f"{PROG}: refused: {len(exc.errors)} error(s); nothing was changed", file=sys.stderr)
        return EXIT_INVALID
    except NotFound as exc:
        print(f"{PROG}: {exc}; nothing was changed", file=sys.stderr)
        return EXIT_INVALID
    except DatastoreUnavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except Conflict as exc:
        print(f"{PROG}: {exc}; nothing was changed", file=sys.stderr)
        return EXIT_INVALID
    except DatastoreError as exc:
        print(f"{PROG}: datastore error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``l3net kube-controller``: run the kube-controller with Lease leader election.

Flags and variables (every one is read here; ``deploy/`` sets only these):
the datastore flags of ``l3netctl``, ``--kubeconfig`` / ``KUBECONFIG`` (absent: the in-cluster service account),
``--lease-namespace`` / ``L3NET_LEASE_NAMESPACE`` (default ``kube-system``),
``--lease-name`` (``l3net-kube-controller``), ``--identity`` / ``POD_NAME``
(default the host name), ``--resync-interval`` seconds (300), ``--metrics-port`` (0: off), and the datastore's
``L3NET_ETCD_ENDPOINTS``, ``L3NET_ETCD_*_FILE``, ``L3NET_ETCD_PREFIX``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from typing import Any

_log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from l3net.cli.common import datastore_parent

    p = subparsers.add_parser("kube-controller", help="keep the datastore equal to the Kubernetes API",
                              parents=[datastore_parent()])
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None,
                   help="kubeconfig file (default $KUBECONFIG, else the in-cluster service account)")
    p.add_argument("--lease-namespace", default=os.environ.get("L3NET_LEASE_NAMESPACE", "kube-system"))
    p.add_argument("--lease-name", default="l3net-kube-controller")
    p.add_argument("--identity", default=os.environ.get("POD_NAME") or socket.gethostname(),
                   help="this replica's name in the Lease (default $POD_NAME, else the host name)")
    p.add_argument("--resync-interval", type=float, default=300.0, help="seconds between full reconciliations")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="serve Prometheus metrics (l3net_kube_controller_*) on this port (default 0: off)")
    p.set_defaults(func=run)


def run(args: Any) -> int:
    from l3net.cli.common import open_datastore
    from l3net.errors import ValidationError
    from l3net.kube.api import KubeAPI, KubeConfigError
    from l3net.kube.controller import KubeController
    from l3net.kube.leader import LeaderElector

    if args.resync_interval <= 0:
        _log.error("--resync-interval: must be a positive number of seconds, got %s", args.resync_interval)
        return 2
    try:
        api = KubeAPI(args.kubeconfig)
    except KubeConfigError as exc:
        _log.error("--kubeconfig: %s", exc)
        return 2
    if args.metrics_port:
        from prometheus_client import start_http_server

        from l3net.kube.controller import REGISTRY

        start_http_server(args.metrics_port, registry=REGISTRY)
    try:
        ds, keys = open_datastore(args)
    except ValidationError as exc:
        _log.error("%s", exc)
        return 2
    state: dict[str, KubeController | None] = {"ctl": None}

    def start() -> None:
        state["ctl"] = KubeController(api, ds, keys, resync_interval=args.resync_interval).start()

    def stop() -> None:
        ctl = state["ctl"]
        if ctl is not None:
            ctl.stop()
            state["ctl"] = None

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    elector = LeaderElector(api, args.lease_namespace, args.lease_name, args.identity,
                            on_start=start, on_stop=stop).start()
    _log.info("kube-controller started identity=%s lease=%s/%s api=%s", args.identity, args.lease_namespace,
              args.lease_name, api.host)
    done.wait()
    elector.stop(release=True)
    stop()
    return 0

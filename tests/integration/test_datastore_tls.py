"""EtcdDatastore over https:// against a real etcd that demands client certificates.

The test makes its own CA, server and client certificates with openssl in a temporary
directory, so nothing here depends on files outside the test. .ci/setup installs openssl, and
under `make test` tests/conftest.py (STRICT_TOOLS) refuses to start without it; only a run outside
`make test` skips here.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3net.datastore import EtcdDatastore, TLSFiles
from l3net.errors import DatastoreUnavailable
from l3net.lab.etcdserver import EtcdServer, ServerTLS, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None,
                       reason="needs the openssl command to make test certificates (Debian openssl; make setup)"),
]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)


def _make_leaf(d: Path, name: str, ca: str, ext: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca (trusted), other-ca (not trusted), server (SAN 127.0.0.1) and client certificates."""
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    # clientAuth too: etcd's own JSON gateway dials etcd's gRPC server with the server certificate, and with
    # --client-cert-auth that dial fails ("connection closed", code 14) unless the certificate allows it.
    _make_leaf(d, "server", "ca",
               "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    _make_leaf(d, "client", "ca", "extendedKeyUsage=clientAuth\n")
    _make_leaf(d, "rogue", "other-ca", "extendedKeyUsage=clientAuth\n")
    return d


@pytest.fixture(scope="module")
def tls_etcd(pki: Path, tmpfs_dir: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(tmpfs_dir / f"etcd-tls-{uuid.uuid4().hex[:6]}", client_port=free_port(), name="tls",
                        tls=ServerTLS(cert=str(pki / "server.crt"), key=str(pki / "server.key"),
                                      client_ca=str(pki / "ca.crt")))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.run_dir, ignore_errors=True)


def test_https_with_ca_and_client_certificate(tls_etcd: EtcdServer, pki: Path) -> None:
    assert tls_etcd.tcp_endpoint is not None and tls_etcd.tcp_endpoint.startswith("https://")
    ds = EtcdDatastore(tls_etcd.tcp_endpoint, TLSFiles(ca=str(pki / "ca.crt"), cert=str(pki / "client.crt"),
                                                      key=str(pki / "client.key")))
    try:
        rev = ds.create("/tls/a", b"1")
        ds.update("/tls/a", b"2", rev)
        kvs, _ = ds.list("/tls/")
        assert [(kv.key, kv.value) for kv in kvs] == [("/tls/a", b"2")]
        # The watch stream runs over its own TLS connection; cancel must still end it.
        watch = ds.watch("/tls/", rev)
        first = next(iter(watch))
        assert [(e.type, e.key, e.value) for e in first] == [("put", "/tls/a", b"1"), ("put", "/tls/a", b"2")]
        watch.cancel()
    finally:
        ds.close()


def test_https_with_wrong_ca_is_unavailable_and_says_tls(tls_etcd: EtcdServer, pki: Path) -> None:
    assert tls_etcd.tcp_endpoint is not None
    ds = EtcdDatastore(tls_etcd.tcp_endpoint, TLSFiles(ca=str(pki / "other-ca.crt"), cert=str(pki / "client.crt"),
                                                      key=str(pki / "client.key")))
    with pytest.raises(DatastoreUnavailable, match="TLS handshake failed") as err:
        ds.get("/tls/a")
    assert tls_etcd.tcp_endpoint in str(err.value)
    with pytest.raises(DatastoreUnavailable, match="TLS handshake failed"):
        ds.watch("/tls/", 1)


def test_https_without_or_with_untrusted_client_certificate_is_refused(tls_etcd: EtcdServer, pki: Path) -> None:
    assert tls_etcd.tcp_endpoint is not None
    for tls in (TLSFiles(ca=str(pki / "ca.crt")),
                TLSFiles(ca=str(pki / "ca.crt"), cert=str(pki / "rogue.crt"), key=str(pki / "rogue.key"))):
        ds = EtcdDatastore(tls_etcd.tcp_endpoint, tls)
        with pytest.raises(DatastoreUnavailable, match="TLS handshake failed"):
            ds.put("/tls/b", b"x")
    ok = EtcdDatastore(tls_etcd.tcp_endpoint, TLSFiles(ca=str(pki / "ca.crt"), cert=str(pki / "client.crt"),
                                                      key=str(pki / "client.key")))
    assert ok.get("/tls/b") is None, "a refused client must not have written anything"


def test_tls_files_are_checked_up_front(pki: Path) -> None:
    with pytest.raises(ValueError, match="together"):
        EtcdDatastore("https://127.0.0.1:1", TLSFiles(cert=str(pki / "client.crt")))
    with pytest.raises(ValueError, match=r"ca file .*missing\.crt"):
        EtcdDatastore("https://127.0.0.1:1", TLSFiles(ca=str(pki / "missing.crt")))

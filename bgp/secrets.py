"""bgp.secrets: the values of Calico ``secretKeyRef`` passwords, read from a mounted Secret.

A Kubernetes Secret mounted as a volume is a directory per Secret with one file per key;
l3net reads ``<secrets dir>/<name>/<key>`` (``felix.config`` ``bgp_secrets_dir``). Names and
keys are validated by the model (DNS subdomain; ``[-._a-zA-Z0-9]+``, not ``.``/``..``) and
checked again here, and the resolved path must stay inside the directory (no symlink out).
One trailing newline is stripped (``echo pw > file``); the rest is the password, 1..80 bytes.
A file that group or others can read is used, with a warning naming the file (mount Secrets
with ``defaultMode: 0600``). Errors never contain the value. :func:`resolve_password` turns a
typed ``password``/``nodeMeshPassword`` (:class:`l3net.model.bgp_specs.Password`) into its text.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

from l3net.model.bgp_specs import Password
from l3net.model.validate.bgp import MAX_PASSWORD_BYTES

_log = logging.getLogger(__name__)

_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class SecretReader:
    """Reads secret values below one directory. Stateless apart from the warned-about files; any thread."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._warned: set[str] = set()

    def read(self, name: str, key: str) -> str:
        """The password of ``secretKeyRef {name, key}``; ValueError (reason without the value) otherwise."""
        if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
            raise ValueError("secretKeyRef.name is not a Secret name")
        if not isinstance(key, str) or not _KEY.fullmatch(key) or key in (".", ".."):
            raise ValueError("secretKeyRef.key is not a Secret key")
        base = self.directory.resolve()
        path = (base / name / key).resolve()
        if base not in path.parents:
            raise ValueError(f"secret {name}/{key} resolves outside {base}")
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"secret {name}/{key} is not a regular file")
            with open(path, "rb") as f:
                raw = f.read(MAX_PASSWORD_BYTES + 2)
        except FileNotFoundError:
            raise ValueError(f"secret {name}/{key} not found under {base}") from None
        except OSError as exc:
            raise ValueError(f"secret {name}/{key} cannot be read: {exc.strerror}") from None
        if st.st_mode & 0o077 and str(path) not in self._warned:
            self._warned.add(str(path))
            _log.warning("secret file is readable by group or others (use mode 0600) path=%s mode=%o",
                         path, stat.S_IMODE(st.st_mode))
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if not 1 <= len(raw) <= MAX_PASSWORD_BYTES:
            raise ValueError(f"secret {name}/{key} must hold 1..{MAX_PASSWORD_BYTES} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"secret {name}/{key} is not UTF-8") from None


def resolve_password(pw: Password | None, secrets: SecretReader | None) -> str | None:
    """The text of a password (None without one); ValueError, never quoting the value, when a ``secretKeyRef``
    cannot be read: that depends on this node's mounted Secrets, not on the document, which the model checked."""
    if pw is None:
        return None
    if pw.secret_key_ref is None:
        return pw.value
    if secrets is None:
        raise ValueError("secretKeyRef given but no secrets directory is configured (bgp_secrets_dir)")
    return secrets.read(pw.secret_key_ref.name, pw.secret_key_ref.key)


def write_private(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 from the first byte (never world-readable)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)   # an older tmp file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)

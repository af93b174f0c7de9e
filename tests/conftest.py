"""Fixtures shared by the whole suite: unique prefixes, certificates.

``etcd_server`` (one real etcd for the session) comes from meshware's own pytest plugin.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def mesh_prefix() -> str:
    """A mesh prefix (``MESHWARE_PREFIX``) no other test uses."""
    return f"/mw-{uuid.uuid4().hex[:10]}"


EC_KEY = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"


def openssl(cwd: Path, command: str) -> None:
    subprocess.run(["openssl", *command.split()], cwd=cwd, check=True, capture_output=True)


def make_ca(cwd: Path, name: str) -> None:
    openssl(cwd, f"req -x509 {EC_KEY} -keyout {name}.key -out {name}.pem -days 1 -subj /CN={name}")


def make_cert(cwd: Path, name: str, ca: str, extensions: str) -> None:
    (cwd / f"{name}.ext").write_text(extensions)
    openssl(cwd, f"req {EC_KEY} -keyout {name}.key -out {name}.csr -subj /CN={name}")
    openssl(
        cwd,
        f"x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -days 1 "
        f"-extfile {name}.ext -out {name}.pem",
    )


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and a foreign CA."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI")
    cwd = tmp_path_factory.mktemp("certs")
    make_ca(cwd, "ca")
    make_ca(cwd, "other-ca")
    make_cert(
        cwd,
        "server",
        "ca",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    make_cert(cwd, "client", "ca", "extendedKeyUsage=clientAuth\n")
    return cwd

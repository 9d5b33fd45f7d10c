"""The hostile-client suite: attacks against a real ``aiml021 serve`` child process (mTLS, the
reference models) while a legitimate device (a probe process) measures its latency.

Fixtures: ``pki`` (a dev CA, the server certificate and one certificate per
:data:`tests.adversarial._served.DEVICES`, plus ``admin.pem`` with an Admin token, ``admin``, for
what only an administrator may do), ``served`` (the gateway, one per test module),
``legit`` (the legitimate device's session probe against ``served``). Wrap an attack in
:func:`tests.adversarial._attack.under_attack` to get the issue's three checks (correct answers
and p99 of the legitimate device, RSS back to baseline). A test that needs other settings starts
its own gateway with :func:`tests.adversarial._served.serve` (``env`` = ``AIML021_GATEWAY_*``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.auth import CertificateAuthority, default_ca_dir, write_dev_pki
from tests.adversarial._served import DEVICES, Probe, ServedGateway, probe, serve
from tests.support.authz import Identity, add_token_client


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    paths = write_dev_pki(d, DEVICES)
    _admin(d, paths["ca_dir"])  # pki/jwks.json: the tokens the served gateway trusts
    return d


def _admin(pki: Path, ca_dir: Path) -> Identity:
    ca = CertificateAuthority.open(ca_dir).keypair
    return add_token_client(pki, ca.cert, ca.key, "admin", "Admin")


@pytest.fixture(scope="session")
def admin(pki: Path) -> Identity:
    """An administrator: ``pki/admin.pem`` (a client certificate naming no device) and an Admin
    token (``admin.metadata()``) that the served gateway verifies."""
    return _admin(pki, default_ca_dir(pki))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[ServedGateway]:
    with serve(tmp_path_factory.mktemp("served"), pki) as gw:
        yield gw


@pytest.fixture(scope="module")
def legit(served: ServedGateway) -> Iterator[Probe]:
    with probe(served) as p:
        yield p

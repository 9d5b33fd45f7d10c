"""Development PKI and signed tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from common.auth import (
    create_ca,
    device_id_of,
    issue_device_cert,
    issue_server_cert,
    load_keypair,
    write_dev_pki,
)
from common.cli import main
from common.errors import InvalidArgument


def test_device_cert_carries_the_id_and_chains_to_the_ca(tmp_path: Path) -> None:
    ca = create_ca()
    dev = issue_device_cert(ca, "cam-7")
    assert device_id_of(dev.cert) == "cam-7"
    dev.cert.verify_directly_issued_by(ca.cert)
    san = dev.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "aiml021:device:cam-7" in san.get_values_for_type(x509.UniformResourceIdentifier)
    server = issue_server_cert(ca, ["gw.example", "10.0.0.1"])
    names = server.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["gw.example"]
    with pytest.raises(InvalidArgument):
        issue_device_cert(ca, "a/b")
    with pytest.raises(ValueError):
        dev.cert.verify_directly_issued_by(create_ca("other").cert)


def test_write_dev_pki_reuses_the_ca_and_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_dev_pki(tmp_path, ["d1"])
    ca1 = (tmp_path / "ca.pem").read_bytes()
    assert main(["certs", "-o", str(tmp_path), "--device", "d2"]) == 0
    assert (tmp_path / "ca.pem").read_bytes() == ca1
    assert "d2:" in capsys.readouterr().out
    kp = load_keypair(tmp_path / "d2.pem", tmp_path / "d2.key")
    assert device_id_of(kp.cert) == "d2"
    assert oct((tmp_path / "d2.key").stat().st_mode & 0o777) == "0o600"

"""The issuing CA: what it signs from a request, one-time bootstrap tokens, rotation with a
trust bundle, the device profile the gateway checks, and the development PKI's layout."""

from __future__ import annotations

import datetime as dt
import sqlite3
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.auth import (
    DEVICE_URI_PREFIX,
    CertificateAuthority,
    DeviceScope,
    KeyPair,
    create_ca,
    device_identity,
    load_server_tls,
    uri_claims,
    write_dev_pki,
)
from common.auth._enroll import make_csr, renewal_proof, verify_renewal_proof
from common.errors import FailedPrecondition, InvalidArgument, Unauthenticated


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_ca_directory_is_private_and_init_refuses_to_overwrite(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    CertificateAuthority.init(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "service.key").stat().st_mode) == 0o600
    with pytest.raises(FailedPrecondition, match="already holds a CA"):
        CertificateAuthority.init(d)


def test_device_certificate_from_a_request_has_the_device_profile(ca: CertificateAuthority) -> None:
    key = _key()
    issued = ca.sign_device(make_csr(key, "cam-1"), "cam-1", lifetime_s=600)
    cert = issued.cert
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca.keypair.cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=590) < lifetime <= dt.timedelta(seconds=600)
    ident = device_identity(cert)
    assert ident.device_id == "cam-1" and ident.serial == format(cert.serial_number, "x")


def test_requests_that_do_not_fit_are_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(InvalidArgument, match="names 'cam-2', not device 'cam-1'"):
        ca.sign_device(make_csr(_key(), "cam-2"), "cam-1")
    with pytest.raises(InvalidArgument, match="limit"):
        ca.sign_device(b"x" * 20_000, "cam-1")
    with pytest.raises(InvalidArgument, match="not a PEM"):
        ca.sign_device(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "cam-1")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cam-1")]))
        .sign(rsa_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(InvalidArgument, match="EC P-256 or P-384"):
        ca.sign_device(csr, "cam-1")
    with pytest.raises(InvalidArgument, match="invalid device id"):
        ca.sign_device(make_csr(_key(), "cam-1"), "a b")


def test_bootstrap_token_is_one_time_expiring_and_bound_to_its_device(
    ca: CertificateAuthority,
) -> None:
    token = ca.issue_bootstrap("cam-1", ttl_s=60)
    assert token not in (ca.directory / "tokens.sqlite3").read_bytes().decode("latin-1")
    with pytest.raises(Unauthenticated, match="another device"):
        ca.redeem_bootstrap(token, "cam-2")
    ca.redeem_bootstrap(token, "cam-1")
    with pytest.raises(Unauthenticated, match="already used"):
        ca.redeem_bootstrap(token, "cam-1")
    with pytest.raises(Unauthenticated, match="unknown"):
        ca.redeem_bootstrap("aiml021-bt.guess", "cam-1")
    short = ca.issue_bootstrap("cam-3", ttl_s=0.05)
    time.sleep(0.1)
    with pytest.raises(Unauthenticated, match="expired"):
        ca.redeem_bootstrap(short, "cam-3")


def test_renewal_proof_binds_the_new_request_to_the_current_key(ca: CertificateAuthority) -> None:
    current_key = _key()
    current = ca.sign_device(make_csr(current_key, "cam-1"), "cam-1", 600).cert
    csr = make_csr(_key(), "cam-1")
    verify_renewal_proof(current, csr, renewal_proof(current_key, csr))
    with pytest.raises(Unauthenticated, match="does not verify"):
        verify_renewal_proof(current, csr, renewal_proof(_key(), csr))
    with pytest.raises(Unauthenticated, match="does not verify"):
        verify_renewal_proof(current, make_csr(_key(), "cam-1"), renewal_proof(current_key, csr))


def test_rotation_trusts_both_cas_until_retire(ca: CertificateAuthority) -> None:
    old_cert = ca.keypair.cert
    issued_old = ca.sign_device(make_csr(_key(), "cam-1"), "cam-1", 600).cert
    new = ca.rotate()
    reopened = CertificateAuthority.open(ca.directory)
    assert reopened.keypair.cert == new.cert != old_cert
    assert reopened.bundle == [new.cert, old_cert]
    issued_new = reopened.sign_device(make_csr(_key(), "cam-1"), "cam-1", 600).cert
    issued_new.verify_directly_issued_by(new.cert)
    reopened.verify_issued(issued_old)  # still trusted during the overlap
    # devices that trust only the old CA can still reach the service to renew
    service = x509.load_pem_x509_certificate((ca.directory / "service.pem").read_bytes())
    service.verify_directly_issued_by(old_cert)
    assert reopened.retire() == [old_cert]
    service = x509.load_pem_x509_certificate((ca.directory / "service.pem").read_bytes())
    service.verify_directly_issued_by(new.cert)
    with pytest.raises(Unauthenticated, match="not issued by a trusted CA"):
        CertificateAuthority.open(ca.directory).verify_issued(issued_old)


def _leaf(
    ca: KeyPair,
    *,
    eku: list[x509.ObjectIdentifier] | None,
    uris: list[str],
    cn: str,
    usage: bool = True,
) -> x509.Certificate:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=1))
    )
    if usage:
        b = b.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if uris:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    return b.sign(ca.key, hashes.SHA256())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eku": None, "uris": [DEVICE_URI_PREFIX + "d"], "cn": "d"}, "clientAuth"),
        (
            {
                "eku": [ExtendedKeyUsageOID.SERVER_AUTH],
                "uris": [DEVICE_URI_PREFIX + "d"],
                "cn": "d",
            },
            "clientAuth",
        ),
        (
            {"eku": [ExtendedKeyUsageOID.CLIENT_AUTH], "uris": [], "cn": "d"},
            "exactly one device URI SAN",
        ),
        (
            {
                "eku": [ExtendedKeyUsageOID.CLIENT_AUTH],
                "uris": [DEVICE_URI_PREFIX + "a", DEVICE_URI_PREFIX + "b"],
                "cn": "a",
            },
            "exactly one device URI SAN",
        ),
        (
            {
                "eku": [ExtendedKeyUsageOID.CLIENT_AUTH],
                "uris": [DEVICE_URI_PREFIX + "d"],
                "cn": "other",
            },
            "differs",
        ),
        (
            {
                "eku": [ExtendedKeyUsageOID.CLIENT_AUTH],
                "uris": [DEVICE_URI_PREFIX + "d"],
                "cn": "d",
                "usage": False,
            },
            "digitalSignature",
        ),
    ],
)
def test_ca_signed_certificates_outside_the_device_profile_are_not_devices(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(Unauthenticated, match=message):
        device_identity(_leaf(create_ca(), **kwargs))  # type: ignore[arg-type]


def test_a_ca_certificate_is_not_a_device() -> None:
    with pytest.raises(Unauthenticated, match="CA certificate"):
        device_identity(create_ca().cert)


def test_dev_pki_keeps_the_ca_key_out_of_the_tls_dir(tmp_path: Path) -> None:
    tls = tmp_path / "certs"
    paths = write_dev_pki(tls, ["d1"])
    assert not (tls / "ca.key").exists()
    assert (tmp_path / "certs-ca" / "ca.key").exists() and paths["ca_dir"] == tmp_path / "certs-ca"
    material = load_server_tls(tls)  # the gateway accepts this layout
    assert material.cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    # an older layout (CA key beside the server's) is moved out on the next run
    (tls / "ca.key").write_bytes((tmp_path / "certs-ca" / "ca.key").read_bytes())
    with pytest.raises(InvalidArgument, match="CA private key must not live"):
        load_server_tls(tls)
    (tls / "ca.key").unlink()


def test_legacy_layout_is_migrated(tmp_path: Path) -> None:
    tls = tmp_path / "old"
    tls.mkdir()
    legacy = create_ca()
    legacy.write(tls, "ca")
    write_dev_pki(tls, ["d1"])
    assert not (tls / "ca.key").exists()
    assert CertificateAuthority.open(tmp_path / "old-ca").keypair.cert == legacy.cert


def test_gateway_refuses_a_readable_server_key_and_a_client_certificate_as_server(
    tmp_path: Path,
) -> None:
    tls = tmp_path / "certs"
    write_dev_pki(tls, ["d1"])
    (tls / "server.key").chmod(0o644)
    with pytest.raises(InvalidArgument, match=r"server private key .* mode 0644"):
        load_server_tls(tls)
    (tls / "server.key").chmod(0o600)
    (tls / "server.pem").write_bytes((tls / "d1.pem").read_bytes())
    (tls / "server.key").write_bytes((tls / "d1.key").read_bytes())
    with pytest.raises(InvalidArgument, match="serverAuth"):
        load_server_tls(tls)


def test_bootstrap_token_carries_the_tenant_the_operator_chose(ca: CertificateAuthority) -> None:
    token = ca.issue_bootstrap("cam-7", 600, DeviceScope("acme", "lines", "eu-west"))
    scope = ca.redeem_bootstrap(token, "cam-7")
    assert scope == DeviceScope("acme", "lines", "eu-west")
    cert = ca.sign_device(make_csr(_key(), "cam-7"), "cam-7", 600, scope).cert
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(uris.get_values_for_type(x509.UniformResourceIdentifier)) == {
        DEVICE_URI_PREFIX + "cam-7",
        "aiml021:org:acme",
        "aiml021:project:lines",
        "aiml021:region:eu-west",
    }
    assert DeviceScope.of(cert) == scope
    # unscoped tokens and certificates stay unscoped
    plain = ca.issue_bootstrap("cam-8", 600)
    assert ca.redeem_bootstrap(plain, "cam-8") == DeviceScope()
    assert DeviceScope.of(ca.sign_device(make_csr(_key(), "cam-8"), "cam-8", 600).cert) == (
        DeviceScope()
    )


@pytest.mark.parametrize(
    ("org", "project", "region", "reason"),
    [
        ("ac me", "", "", "invalid org"),
        ("acme/evil", "", "", "invalid org"),
        ("x" * 65, "", "", "invalid org"),
        ("acme", "a\nb", "", "invalid project"),
        ("", "lines", "", "needs its org"),
        ("acme", "", "eu\\west", "invalid region"),
    ],
)
def test_a_tenant_that_cannot_be_written_into_a_certificate_is_refused(
    ca: CertificateAuthority, org: str, project: str, region: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        ca.issue_bootstrap("cam-1", 600, DeviceScope(org, project, region))


def test_a_token_table_from_before_tenants_is_upgraded(ca: CertificateAuthority) -> None:
    db_path = ca.directory / "tokens.sqlite3"
    db_path.unlink(missing_ok=True)
    with sqlite3.connect(db_path) as db:
        db.execute(
            "CREATE TABLE tokens (digest TEXT PRIMARY KEY, device_id TEXT NOT NULL,"
            " expires_at REAL NOT NULL, used_at REAL)"
        )
    token = ca.issue_bootstrap("cam-3", 600, DeviceScope("acme"))
    assert ca.redeem_bootstrap(token, "cam-3") == DeviceScope("acme")


@pytest.mark.parametrize(
    "uris",
    [
        ["aiml021:org:acme", "aiml021:org:other"],  # two tenants: which one?
        ["aiml021:device:cam-1", "aiml021:device:cam-2"],
        ["aiml021:region:"],
        ["aiml021:project:" + "p" * 65],
    ],
)
def test_contradictory_or_malformed_uri_claims_are_refused(
    ca: CertificateAuthority, uris: list[str]
) -> None:
    """One reader of the aiml021: URI SANs (the gateway's identity and the CA's renewals): a
    certificate that claims two tenants or an empty or overlong value names nobody."""
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cam-1")]))
        .issuer_name(ca.keypair.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [*(x509.UniformResourceIdentifier(u) for u in uris), x509.DNSName("x")]
            ),
            critical=False,
        )
        .sign(ca.keypair.key, hashes.SHA256())
    )
    with pytest.raises(Unauthenticated, match="bad or repeated"):
        uri_claims(cert)
    with pytest.raises(Unauthenticated, match="bad or repeated"):
        DeviceScope.of(cert)


def test_uri_claims_ignore_other_uris(ca: CertificateAuthority) -> None:
    cert = ca.sign_device(
        make_csr(_key(), "cam-9"), "cam-9", 600, DeviceScope("acme", "", "eu")
    ).cert
    assert uri_claims(cert) == {"device": "cam-9", "org": "acme", "region": "eu"}

"""TLS settings turned into pika's parameters: the CA, a client certificate, certificate
login (EXTERNAL), the errors that name the setting and the file, and how a failed TLS
handshake is told. The certificates are made with openssl (tests.tlsbroker.Certificates)."""

from __future__ import annotations

import os
import re
import shutil
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika.exceptions  # noqa: TID251 - the failures pika raises, to see how they are told
import pytest

from bus import params
from bus.errors import AccessRefused, ConnectionLost, InvalidUrl
from bus.params import Tls, certificate_login, connection_parameters, probe_parameters
from bus.tls import InvalidTls, ssl_context, tls_user
from tests.tlsbroker import Certificates

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

HOST = "amqps://rabbit1:5671/"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def worker(certs: Certificates) -> Tls:
    return certs.client("worker-1")


def one(url: str, tls: Tls | None) -> Any:
    [parameters] = connection_parameters(url, name="t", heartbeat=7, tls=tls)
    return parameters


def credentials(parameters: Any) -> str:
    return type(parameters.credentials).__name__


# -- the context --


def test_amqps_without_settings_keeps_the_system_cas_and_the_host_check() -> None:
    parameters = one("amqps://u:p@rabbit1/", None)
    context = parameters.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert parameters.port == 5671 and credentials(parameters) == "PlainCredentials"


def test_a_ca_file_is_the_only_ca_the_broker_is_checked_against(certs: Certificates) -> None:
    parameters = one("amqps://u:p@rabbit1:5782/", Tls(ca_file=str(certs.ca_file)))
    context = parameters.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert parameters.ssl_options.server_hostname == "rabbit1"
    assert [ca["subject"] for ca in context.get_ca_certs()] == [
        ((("commonName", "corral-test-ca"),),)
    ]
    assert parameters.heartbeat == 7 and parameters.port == 5782
    assert credentials(parameters) == "PlainCredentials"  # a password: PLAIN, over TLS


def test_every_url_of_a_setting_shares_one_context(certs: Certificates) -> None:
    several = connection_parameters(
        "amqps://u:p@rabbit1/,amqps://u:p@rabbit2/", name="t", heartbeat=0, tls=certs.client("w")
    )
    assert [p.ssl_options.server_hostname for p in several] == ["rabbit1", "rabbit2"]
    assert several[0].ssl_options.context is several[1].ssl_options.context


def test_probe_parameters_take_the_tls_settings(worker: Tls) -> None:
    [probe] = probe_parameters(HOST, name="probe", tls=worker)
    assert probe.heartbeat == 0 and probe.socket_timeout == 2
    assert probe.ssl_options.context.get_ca_certs()
    assert credentials(probe) == "ExternalCredentials"


def test_empty_tls_settings_change_nothing() -> None:
    assert one("amqp://u:p@rabbit1/", Tls()).ssl_options is None


# -- certificate login --


@pytest.mark.parametrize(
    "url", [HOST, "amqps://worker-1@rabbit1:5671/", "amqps://worker-1:@rabbit1:5671/"]
)
def test_a_certificate_and_no_password_log_in_by_the_certificate(url: str, worker: Tls) -> None:
    parameters = one(url, worker)
    assert credentials(parameters) == "ExternalCredentials"
    assert (parameters.host, parameters.port) == ("rabbit1", 5671)
    assert certificate_login(url, worker)


def test_a_certificate_and_a_password_log_in_by_the_password(worker: Tls) -> None:
    url = "amqps://alice:s3cret@rabbit1/"
    parameters = one(url, worker)
    assert credentials(parameters) == "PlainCredentials"
    assert parameters.credentials.username == "alice"
    assert not certificate_login(url, worker)
    assert not certificate_login(HOST, Tls(ca_file=worker.ca_file))
    assert not certificate_login(HOST, None)


def test_the_certificate_user_is_its_common_name(certs: Certificates, worker: Tls) -> None:
    assert tls_user(worker) == "worker-1"
    assert params.tls_user(certs.client("node.7_a")) == "node.7_a"
    assert tls_user(Tls(ca_file=worker.ca_file)) is None


def test_the_common_name_reads_the_same_with_cryptography(worker: Tls) -> None:
    pytest.importorskip("cryptography")
    from bus.tls import _cn_by_cryptography, _cn_by_ssl

    assert worker.cert_file is not None
    assert _cn_by_cryptography(worker.cert_file) == _cn_by_ssl(worker.cert_file) == "worker-1"


def test_a_file_without_a_certificate_has_no_user(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(InvalidTls, match=re.escape(f"cert_file {junk} holds no PEM certificate")):
        tls_user(Tls(cert_file=str(junk)))


# -- settings that cannot be used --


def test_tls_settings_with_an_amqp_url_say_to_write_amqps(worker: Tls) -> None:
    with pytest.raises(InvalidTls) as raised:
        one("amqp://u:secret@rabbit1/", Tls(ca_file=worker.ca_file))
    text = str(raised.value)
    assert "TLS settings (ca_file) need amqps:// URLs but the AMQP URL is amqp://" in text
    assert "write amqps://" in text and "secret" not in text
    with pytest.raises(InvalidTls, match=r"\(ca_file, cert_file, key_file\).*URL 2 of 2"):
        connection_parameters("amqps://rabbit1/,amqp://rabbit2/", name="t", heartbeat=0, tls=worker)


def test_an_invalid_tls_setting_is_an_invalid_url(worker: Tls) -> None:
    assert issubclass(InvalidTls, InvalidUrl)  # callers that catch InvalidUrl tell it too


def test_tls_files_in_settings_and_in_the_url_are_refused(worker: Tls) -> None:
    with pytest.raises(InvalidTls, match="in one place"):
        one("amqps://rabbit1/?ssl_options={'cafile':'/x'}", worker)


@pytest.mark.parametrize("setting", ["ca_file", "cert_file", "key_file"])
def test_a_missing_file_is_named_with_its_setting(
    setting: str, worker: Tls, tmp_path: Path
) -> None:
    missing = str(tmp_path / "nowhere.pem")
    tls = Tls(**{**vars(worker), setting: missing})
    with pytest.raises(
        InvalidTls, match=re.escape(f"TLS {setting} {missing} cannot be read: No such file")
    ):
        one(HOST, tls)


def test_an_unreadable_file_is_named_with_its_setting(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidTls, match=re.escape(f"TLS ca_file {tmp_path} cannot be read: Is a directory")
    ):
        ssl_context(Tls(ca_file=str(tmp_path)))
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.pem"
        locked.write_text("x")
        locked.chmod(0)
        with pytest.raises(InvalidTls, match="cannot be read: Permission denied"):
            ssl_context(Tls(ca_file=str(locked)))


def test_a_ca_file_without_certificates_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(
        InvalidTls, match=re.escape(f"TLS ca_file {junk} holds no usable CA certificate")
    ):
        one(HOST, Tls(ca_file=str(junk)))


def test_a_key_that_does_not_match_the_certificate_is_named(
    certs: Certificates, worker: Tls
) -> None:
    other = certs.client("other")
    tls = Tls(ca_file=worker.ca_file, cert_file=worker.cert_file, key_file=other.key_file)
    with pytest.raises(InvalidTls) as raised:
        one(HOST, tls)
    text = str(raised.value)
    assert f"cert_file {worker.cert_file} and key_file {other.key_file} are not" in text
    assert "_ssl.c" not in text


def test_a_certificate_without_its_key_says_where_the_key_should_be(worker: Tls) -> None:
    with pytest.raises(InvalidTls, match="no key_file: the key must be in it"):
        one(HOST, Tls(cert_file=worker.cert_file))


def test_a_certificate_and_its_key_in_one_file_are_fine(worker: Tls, tmp_path: Path) -> None:
    assert worker.cert_file is not None and worker.key_file is not None
    both = tmp_path / "both.pem"
    both.write_text(Path(worker.cert_file).read_text() + Path(worker.key_file).read_text())
    assert credentials(one(HOST, Tls(cert_file=str(both)))) == "ExternalCredentials"
    assert tls_user(Tls(cert_file=str(both))) == "worker-1"


def test_a_key_without_a_certificate_is_refused(worker: Tls) -> None:
    with pytest.raises(InvalidTls, match=r"key_file .* is set without cert_file"):
        one(HOST, Tls(key_file=worker.key_file))


# -- how a failed connection is told --


def failing(exc: BaseException) -> Callable[[Any], Any]:
    def connect(_parameters: Any) -> Any:
        raise exc

    return connect


def told(exc: BaseException, tls: Tls | None = None, url: str = HOST) -> Exception:
    parameters = connection_parameters(url, name="t", heartbeat=0, tls=tls)
    with pytest.raises((AccessRefused, ConnectionLost)) as raised:
        params.connect_first(parameters, 0, failing(exc))
    return raised.value


def test_an_untrusted_broker_certificate_names_the_ca_setting() -> None:
    exc = ssl.SSLCertVerificationError(
        1,
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
        " in certificate chain (_ssl.c:1006)",
    )
    error = told(exc)
    assert isinstance(error, ConnectionLost)
    assert str(error).startswith("the broker's TLS certificate is not trusted (")
    assert "check the TLS ca_file" in str(error) and "_ssl.c" not in str(error)


def test_a_refused_certificate_login_says_so(worker: Tls) -> None:
    refused = pika.exceptions.ProbableAuthenticationError("ACCESS_REFUSED - EXTERNAL")
    error = told(refused, worker)
    assert isinstance(error, AccessRefused)
    assert "refused the certificate login (EXTERNAL)" in str(error)
    plain = told(refused, worker, "amqps://alice:pw@rabbit1/")
    assert str(plain) == "the broker refused the user name or password"


def test_a_broker_without_certificate_login_is_told_how_to_enable_it(worker: Tls) -> None:
    error = told(pika.exceptions.AuthenticationError("EXTERNAL"), worker)
    assert isinstance(error, AccessRefused)
    assert "does not offer the EXTERNAL login mechanism" in str(error)
    assert "rabbitmq_auth_mechanism_ssl" in str(error)


@pytest.mark.parametrize(
    "lost",
    [
        "SSLError(1, '[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2580)')",
        # With TLS 1.3 the client may finish first and see the socket close instead.
        "SSLEOFError(8, 'EOF occurred in violation of protocol (_ssl.c:2427)')",
    ],
)
def test_a_handshake_the_broker_ends_points_at_the_client_certificate(
    lost: str, worker: Tls
) -> None:
    exc = pika.exceptions.IncompatibleProtocolError(
        f'StreamLostError: ("Stream connection lost: {lost}",)'
    )
    error = told(exc, worker)
    assert isinstance(error, ConnectionLost)
    assert "ended the TLS handshake" in str(error) and "cert_file" in str(error)
    assert "_ssl.c" not in str(error)


def test_tls_to_a_plain_port_points_at_the_tls_listener() -> None:
    exc = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
    error = told(exc)
    assert isinstance(error, ConnectionLost)
    assert "is that port the broker's TLS listener" in str(error)

"""TLS for amqps:// URLs: the CA that vouches for the broker, and a client certificate.

A `Tls` names PEM files; `ssl_context` checks them once, at the edge, and turns
them into one `ssl.SSLContext` that verifies the broker's certificate (against
`ca_file`, else the system's CAs) and its host name, and shows the client
certificate when there is one. `bus.params` hands that context to pika.

With a client certificate and no password in the URL, the bus logs in by the
certificate (SASL EXTERNAL): RabbitMQ, with its `rabbitmq_auth_mechanism_ssl`
plugin and ``ssl_cert_login_from = common_name``, takes the user name from the
certificate's subject CN (`tls_user`), and that user must exist. A worker is
then known by its certificate, not by a password.
"""

from __future__ import annotations

import importlib
import re
import ssl
from dataclasses import dataclass, fields
from typing import Any

from bus.errors import InvalidUrl

CN_OID = "2.5.4.3"  # the subject's commonName
_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)")


class InvalidTls(InvalidUrl):
    """A TLS setting cannot be used: a file is missing, unreadable or not what it should be,
    or TLS was asked for with an amqp:// URL. The text names the setting and the path."""


@dataclass(frozen=True)
class Tls:
    """TLS settings for amqps:// URLs: paths of PEM files, each optional.

    `ca_file`: the CA certificate(s) the broker's certificate must chain to (None: the
    system's CAs). `cert_file`: a client certificate (and its chain) to show the broker;
    with no password in the URL the bus logs in by it (EXTERNAL). `key_file`: that
    certificate's private key (None: it is in `cert_file`).
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def given(self) -> bool:
        """True if any file is set (`Tls()` asks for nothing beyond what amqps:// implies)."""
        return any(getattr(self, field.name) is not None for field in fields(self))

    def names(self) -> str:
        """The settings that are set, for messages: "ca_file, cert_file"."""
        return ", ".join(f.name for f in fields(self) if getattr(self, f.name) is not None)


def ssl_context(tls: Tls | None) -> ssl.SSLContext:
    """A client context that verifies the broker's certificate and host name, against
    `tls.ca_file` or the system's CAs, and shows `tls.cert_file` if set.

    Raises InvalidTls, naming the setting and the path, for a file that is missing,
    unreadable or not PEM of the right kind, or a key that does not match the certificate.
    """
    tls = tls or Tls()
    check_files(tls)
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    except ssl.SSLError as exc:
        raise InvalidTls(
            f"TLS ca_file {tls.ca_file} holds no usable CA certificate ({reason(exc)})"
        ) from None
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except ssl.SSLError as exc:
            if tls.key_file is None:
                what = f"TLS cert_file {tls.cert_file} (no key_file: the key must be in it) is not"
            else:
                what = f"TLS cert_file {tls.cert_file} and key_file {tls.key_file} are not"
            raise InvalidTls(
                f"{what} a PEM certificate and its private key ({reason(exc)})"
            ) from None
    return context


def check_files(tls: Tls) -> None:
    """Raise InvalidTls unless every file `tls` names can be read (and a key has its
    certificate)."""
    if tls.key_file is not None and tls.cert_file is None:
        raise InvalidTls(f"TLS key_file {tls.key_file} is set without cert_file: set both")
    for field in fields(tls):
        path = getattr(tls, field.name)
        if path is None:
            continue
        try:
            with open(path, "rb") as file:
                file.read(1)
        except OSError as exc:
            raise InvalidTls(
                f"TLS {field.name} {path} cannot be read: {exc.strerror or exc}"
            ) from None


def tls_user(tls: Tls) -> str | None:
    """The user a certificate login with `tls` gets: the subject CN of `tls.cert_file`
    (what RabbitMQ takes with ``ssl_cert_login_from = common_name``); None without a
    certificate or a CN. Several CNs are joined with ",", as RabbitMQ does. Raises
    InvalidTls if the file cannot be read as a certificate."""
    if tls.cert_file is None:
        return None
    check_files(tls)
    try:
        return _cn_by_cryptography(tls.cert_file)
    except ImportError:
        pass
    try:
        return _cn_by_ssl(tls.cert_file)
    except (ssl.SSLError, ValueError) as exc:
        raise InvalidTls(
            f"TLS cert_file {tls.cert_file} holds no PEM certificate ({reason(exc)})"
        ) from None


def _cn_by_cryptography(path: str) -> str | None:
    """Raises ImportError when the `cryptography` package is not installed."""
    x509: Any = importlib.import_module("cryptography.x509")
    with open(path, "rb") as file:
        data = file.read()
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise InvalidTls(f"TLS cert_file {path} holds no PEM certificate ({exc})") from None
    names = certificate.subject.get_attributes_for_oid(x509.ObjectIdentifier(CN_OID))
    return ",".join(str(name.value) for name in names) or None


def _cn_by_ssl(path: str) -> str | None:
    # The standard library reads certificates only through this private helper (what
    # ssl.SSLSocket.getpeercert returns, for a file).
    decode: Any = getattr(importlib.import_module("_ssl"), "_test_decode_cert", None)
    if decode is None:
        raise InvalidTls(f"reading the CN of TLS cert_file {path} needs the cryptography package")
    decoded: dict[str, Any] = decode(path)
    names = [
        value for rdn in decoded.get("subject", ()) for key, value in rdn if key == "commonName"
    ]
    return ",".join(str(name) for name in names) or None


def reason(exc: BaseException) -> str:
    """What an exception (an ssl error, often) says, without `(_ssl.c:1006)` source marks."""
    text = _SOURCE.sub("", str(exc)).strip()
    return text or type(exc).__name__

"""The SDK's TLS trust (no service needed; cli/tests/tls.rs runs the SDK
against a real HTTPS service with a test CA)."""

from __future__ import annotations

import ssl

import pytest

from lattice import tls
from lattice.errors import NotConfigured


def test_an_unusable_ca_file_is_named(tmp_path, monkeypatch):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    monkeypatch.setenv("LATTICE_CA_FILE", str(bogus))
    with pytest.raises(NotConfigured) as caught:
        tls.ssl_context()
    assert "bogus.pem" in str(caught.value)


def test_the_context_verifies_and_follows_the_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("LATTICE_CA_FILE", raising=False)
    first = tls.ssl_context()
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    assert tls.ssl_context() is first
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    assert tls.ssl_context() is not first


def test_a_refused_certificate_names_the_fix():
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "unable to get local issuer certificate"
    wrapped = ConnectionError("connect failed")
    wrapped.__cause__ = error
    text = tls.explain(wrapped, "https://lattice.example.org")
    assert "https://lattice.example.org" in text and "LATTICE_CA_FILE" in text
    assert tls.explain(ConnectionError("refused"), "https://x") is None

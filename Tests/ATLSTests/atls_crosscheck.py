#!/usr/bin/env python3
"""Independent check of Asterism's aTLS wire format with Python's ssl and cryptography.

Connects with a fresh 32-byte nonce as standard base64 in the SNI, then checks the server's
certificate the way Constellation's Go verifier is specified to (shared/design/CONSTELLATION-WIRE.md):
self-signature, validity, CN, the variant extension, and that the evidence binds
SHA-256(DER SubjectPublicKeyInfo) and the nonce. For qemu-vtpm it also checks the TPM quote's
qualifying data and its ECDSA signature with the AK in the document. Prints one JSON object.
"""
import argparse
import base64
import datetime
import hashlib
import json
import os
import socket
import ssl
import struct
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import NameOID

VARIANTS = {"1.3.9900.1.1": "dummy", "1.3.9900.5.1": "qemu-vtpm"}


def tpm2b(data, offset):
    (size,) = struct.unpack_from(">H", data, offset)
    return data[offset + 2:offset + 2 + size], offset + 2 + size


def check_qemu_vtpm(document, key_hash, nonce):
    user_data = base64.b64decode(document["UserData"])
    assert user_data == key_hash, "UserData is not SHA-256 of the certificate's SubjectPublicKeyInfo"
    assert document.get("InstanceInfo") in (None, ""), "qemu-vtpm carries no instance info"
    attestation = document["Attestation"]
    quote = next(q for q in attestation["quotes"] if q["pcrs"]["hash"] == 11)
    attest = base64.b64decode(quote["quote"])
    assert attest[:4] == b"\xffTCG" and attest[4:6] == b"\x80\x18", "not a TPMS_ATTEST quote"
    _, offset = tpm2b(attest, 6)  # qualifiedSigner
    extra_data, _ = tpm2b(attest, offset)
    expected = hashlib.sha256(hashlib.sha256(user_data + nonce).digest()).digest()
    assert extra_data == expected, "quote qualifying data is not SHA-256(SHA-256(userData || nonce))"
    # TPMT_PUBLIC of an ECC P-256 key: type, nameAlg, attributes, authPolicy, symmetric, scheme(+hash), curve, kdf, x, y.
    ak = base64.b64decode(attestation["ak_pub"])
    (key_type,) = struct.unpack_from(">H", ak, 0)
    assert key_type == 0x0023, "AK is not an ECC key"
    _, offset = tpm2b(ak, 8)  # authPolicy
    offset += 2  # symmetric: TPM_ALG_NULL
    (scheme,) = struct.unpack_from(">H", ak, offset)
    offset += 4 if scheme != 0x0010 else 2
    offset += 4  # curve, kdf
    x, offset = tpm2b(ak, offset)
    y, _ = tpm2b(ak, offset)
    public = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()).public_key()
    signature = base64.b64decode(quote["raw_sig"])
    r, offset = tpm2b(signature, 4)
    s, _ = tpm2b(signature, offset)
    public.verify(utils.encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big")), attest, ec.ECDSA(hashes.SHA256()))


def client_context(version):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def connect(context, port, sni, session=None):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=sni, session=session) as tls:
            tls.sendall(b"ping")
            echoed = tls.recv(16)
            return tls.getpeercert(binary_form=True), tls.version(), tls.selected_alpn_protocol(), tls.session, tls.session_reused, echoed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", choices=["1.2", "1.3"], default="1.3")
    arguments = parser.parse_args()
    version = ssl.TLSVersion.TLSv1_2 if arguments.tls == "1.2" else ssl.TLSVersion.TLSv1_3
    nonce = os.urandom(32)
    sni = base64.b64encode(nonce).decode()
    context = client_context(version)
    der, negotiated, alpn, session, _, echoed = connect(context, arguments.port, sni)

    certificate = x509.load_der_x509_certificate(der)
    common_names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    assert common_names == ["Constellation"], f"subject CN {common_names}"
    assert certificate.issuer == certificate.subject, "not self-issued"
    certificate.public_key().verify(certificate.signature, certificate.tbs_certificate_bytes, ec.ECDSA(certificate.signature_hash_algorithm))
    now = datetime.datetime.now(datetime.timezone.utc)
    # cryptography >= 42 has the *_utc properties; Debian 12's 38 has naive UTC datetimes.
    not_before = getattr(certificate, "not_valid_before_utc", None) or certificate.not_valid_before.replace(tzinfo=datetime.timezone.utc)
    not_after = getattr(certificate, "not_valid_after_utc", None) or certificate.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    assert not_before <= now <= not_after, "not valid now"
    span = not_after - not_before
    assert span == datetime.timedelta(hours=4), f"validity span {span}"
    assert isinstance(certificate.public_key().curve, ec.SECP256R1), "key is not P-256"
    spki = certificate.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_hash = hashlib.sha256(spki).digest()

    found = [e for e in certificate.extensions if e.oid.dotted_string in VARIANTS]
    assert found, "no known variant extension"
    extension = found[0]
    assert not extension.critical, "variant extension is critical"
    document = json.loads(extension.value.value)
    variant = VARIANTS[extension.oid.dotted_string]
    if variant == "dummy":
        assert base64.b64decode(document["UserData"]) == key_hash, "UserData is not the key hash"
        assert base64.b64decode(document["Nonce"]) == nonce, "Nonce is not ours"
    else:
        check_qemu_vtpm(document, key_hash, nonce)

    # A second connection offering the first one's session must not resume (it would skip attestation).
    resumed = None
    if session is not None:
        _, _, _, _, resumed, _ = connect(context, arguments.port, sni, session=session)

    print(json.dumps({
        "ok": True, "variant": variant, "tls": negotiated, "alpn": alpn, "echoed": echoed.decode(),
        "keyHash": key_hash.hex(), "sessionOffered": session is not None, "resumed": resumed,
    }))


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # the Swift test prints this
        print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
        sys.exit(1)

#!/usr/bin/env python3
"""Independent check of Tests/Vectors/crypto.json (and wire.json, sigv4.json).

Recomputes the LockCrypto golden vectors with other implementations
(Python's hashlib BLAKE2b, PyNaCl's XChaCha20-Poly1305, argon2-cffi's
Argon2id) straight from the byte layouts in docs/design.md. If Swift and
this script agree, the documented format is the implemented one.

The AWS Signature V4 vectors (sigv4.json, AWS's published ones) are
recomputed with botocore, AWS's own Python signer, so the vectors, the
Swift signer (Sources/LockServerS3/SigV4.swift) and botocore all agree.
"""
import hashlib
import json
import pathlib
import sys

from argon2.low_level import Type, hash_secret_raw
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt as xchacha_open

V = json.loads((pathlib.Path(__file__).parent / "crypto.json").read_text())["vectors"]
MK = bytes(range(0x00, 0x20))
VAULT = bytes(range(0xA0, 0xB0))
NONCE = bytes(range(0x10, 0x28))
failures = []


def check(name, ok):
    print(("ok   " if ok else "FAIL ") + name)
    if not ok:
        failures.append(name)


def kdf(key, subkey_id, context):
    """crypto_kdf_derive_from_key: BLAKE2b-256, salt = id LE ‖ 0⁸, personal = context ‖ 0⁸."""
    return hashlib.blake2b(b"", digest_size=32, key=key,
                           salt=subkey_id.to_bytes(8, "little") + bytes(8),
                           person=context + bytes(8)).digest()


def key_id(key):
    return hashlib.blake2b(b"lockfs key id v1", digest_size=32, key=key).digest()[:8]


def padme(n):
    if n <= 1:
        return n
    e = n.bit_length() - 1
    s = e.bit_length()
    z = e - s
    if z <= 0:
        return n
    m = (1 << z) - 1
    return (n + m) & ~m


def open_envelope_any(blob, kind, key, context):
    """open_envelope for an envelope sealed with a random nonce."""
    assert blob[0] == 1 and blob[1] == kind and blob[2:10] == key_id(key)
    padded = xchacha_open(blob[34:], blob[:10] + context, blob[10:34], key)
    body = padded.rstrip(b"\0")
    assert body.endswith(b"\x80") and padme(len(body)) == len(padded)
    return body[:-1]


def open_envelope(blob, kind, key, context):
    """version ‖ kind ‖ key id ‖ nonce ‖ ciphertext ‖ tag; AD = blob[0:10] ‖ context."""
    assert blob[0] == 1 and blob[1] == kind and blob[2:10] == key_id(key) and blob[10:34] == NONCE
    padded = xchacha_open(blob[34:], blob[:10] + context, blob[10:34], key)
    body = padded.rstrip(b"\0")
    assert body.endswith(b"\x80") and padme(len(body)) == len(padded)
    return body[:-1]


sub = {n: kdf(MK, i, b"lockfsMK") for i, n in [(1, "content"), (2, "metadata"), (3, "chunk-id"), (4, "chunker")]}
for name, key in sub.items():
    check("subkey." + name, key.hex() == V["subkey." + name])
check("keyid.content", key_id(sub["content"]).hex() == V["keyid.content"])
check("keyid.master", key_id(MK).hex() == V["keyid.master"])

gear = []
for block in range(32):
    out = hashlib.blake2b(b"lockfs gear v1" + bytes([block]), digest_size=64, key=sub["chunker"]).digest()
    gear += [int.from_bytes(out[8 * j:8 * j + 8], "little") for j in range(8)]
check("gear.first4", ",".join(format(g, "x") for g in gear[:4]) == V["gear.first4"])
check("gear.blake2b", hashlib.blake2b(b"".join(g.to_bytes(8, "little") for g in gear), digest_size=32).hexdigest() == V["gear.blake2b"])

for prefix, plain in [("chunk", b"lockfs golden chunk"), ("chunk.empty", b"")]:
    cid = hashlib.blake2b(plain, digest_size=32, key=sub["chunk-id"]).digest()
    check(prefix + ".id", cid.hex() == V[prefix + ".id"])
    check(prefix + ".sealed", open_envelope(bytes.fromhex(V[prefix + ".sealed"]), 1, sub["content"], VAULT + cid) == plain)

genesis = hashlib.blake2b(b"lockfs journal genesis v1" + VAULT, digest_size=32).digest()
check("chain.genesis", genesis.hex() == V["chain.genesis"])
entry = bytes.fromhex(V["entry.sealed"])
check("entry.sealed", open_envelope(entry, 2, sub["metadata"], VAULT + (0).to_bytes(8, "big") + genesis) == b"batch of operations")
head1 = hashlib.blake2b(genesis + (1).to_bytes(8, "big") + entry, digest_size=32).digest()
check("chain.1", head1.hex() == V["chain.1"])
check("checkpoint.sealed", open_envelope(bytes.fromhex(V["checkpoint.sealed"]), 3, sub["metadata"],
                                         VAULT + (1).to_bytes(8, "big") + head1) == b"checkpoint")

params = bytes([1]) + (2).to_bytes(4, "big") + (64 << 20).to_bytes(8, "big") + bytes(range(0x30, 0x40))
check("kdf.parameters", params.hex() == V["kdf.parameters"])
out = hash_secret_raw(b"correct horse battery staple", bytes(range(0x30, 0x40)), time_cost=2,
                      memory_cost=64 * 1024, parallelism=1, hash_len=64, type=Type.ID)
check("kdf.kek", out[:32].hex() == V["kdf.kek"])
check("kdf.login", kdf(out[32:], 1, b"lockfsLG").hex() == V["kdf.login"])
check("keyring.password-slot", open_envelope(bytes.fromhex(V["keyring.password-slot"]), 4, out[:32], VAULT + params) == MK)

secret = bytes(range(0x70, 0x90))
raw = secret + hashlib.blake2b(b"lockfs recovery key v1" + secret, digest_size=32).digest()[:3]
alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
bits = int.from_bytes(raw, "big")
chars = "".join(alphabet[(bits >> (5 * (55 - i))) & 31] for i in range(56))
check("recovery.display", "-".join(chars[i:i + 4] for i in range(0, 56, 4)) == V["recovery.display"])
rkek = kdf(secret, 1, b"lockfsRK")
check("recovery.kek", rkek.hex() == V["recovery.kek"])
check("recovery.proof", kdf(secret, 2, b"lockfsRK").hex() == V["recovery.proof"])

# Key generations: the recovery box key, a generation seal to it, a link.
import nacl.public, nacl.signing
rbox = nacl.public.PrivateKey(kdf(secret, 3, b"lockfsRK"))
check("recovery.box-public", bytes(rbox.public_key).hex() == V["recovery.box-public"])
MK2 = bytes(range(0x40, 0x60))
sealed2 = nacl.public.SealedBox(rbox).decrypt(bytes.fromhex(V["generation.seal-2-recovery"]))
check("generation.seal-2-recovery (crypto_box_seal of u32 2 ‖ MK2)", sealed2 == (2).to_bytes(4, "big") + MK2)
check("generation.link-2 (MK1 under crypto_kdf(MK2, 5, lockfsMK))",
      open_envelope(bytes.fromhex(V["generation.link-2"]), 6, kdf(MK2, 5, b"lockfsMK"), VAULT + (1).to_bytes(4, "big")) == MK)
sig_key = nacl.signing.SigningKey(bytes(range(0x50, 0x70)))
box_pub = bytes(nacl.public.PrivateKey(bytes(range(0x90, 0xB0))).public_key)
sig_key.verify_key.verify(b"lockfs box key v1" + box_pub, bytes.fromhex(V["device.box-key-signature"]))
check("device.box-key-signature", True)
check("keyring.recovery-slot", open_envelope(bytes.fromhex(V["keyring.recovery-slot"]), 5, rkek, VAULT) == MK)

# LockWire records (Tests/Vectors/wire.json), parsed from docs/design.md's tables.
W = json.loads((pathlib.Path(__file__).parent / "wire.json").read_text())["vectors"]
ids16 = lambda seed: bytes((seed + i) & 0xFF for i in range(16))
ids32 = lambda seed: bytes((seed + i) & 0xFF for i in range(32))

m = bytes.fromhex(W["manifest"])
check("wire.manifest", m[0] == 1 and int.from_bytes(m[1:5], "big") == 2 and m[5:37] == ids32(1)
      and int.from_bytes(m[37:41], "big") == 1048576 and m[41:73] == ids32(2)
      and int.from_bytes(m[73:77], "big") == 12345 and len(m) == 77)

e = bytes.fromhex(W["entry"])
base_seq, base_head = int.from_bytes(e[1:9], "big"), e[9:41]
batch = open_envelope(e[41:], 2, sub["metadata"], VAULT + e[1:9] + base_head)
check("wire.entry header", e[0] == 1 and base_seq == 0 and base_head == genesis)
check("wire.batch header", batch[0] == 1 and batch[1:17] == ids16(0x40)
      and int.from_bytes(batch[17:25], "big") == 1_764_115_200_123_456_789
      and int.from_bytes(batch[25:29], "big") == 7)
op = batch[29:]
e2 = bytes.fromhex(W["entry.v2"])
dk = bytes.fromhex(W["device.public-keys"])
import nacl.signing, nacl.public
seed, box_secret = bytes(range(0x50, 0x70)), bytes(range(0x90, 0xB0))
check("wire.device public keys (Ed25519 from seed 50..6f, X25519 from 90..af)",
      dk[:32] == bytes(nacl.signing.SigningKey(seed).verify_key) and dk[32:] == bytes(nacl.public.PrivateKey(box_secret).public_key))
check("wire.entry v2 header", e2[0] == 2 and e2[1:41] == e[1:41] and e2[41:57] == ids16(0x40) and e2[57:89] == dk[:32]
      and e2[153:] == e[41:])
nacl.signing.VerifyKey(e2[57:89]).verify(b"lockfs entry v2" + VAULT + e2[:89] + e2[153:], e2[89:153])
check("wire.entry v2 signature (Ed25519 over domain, vault id, header, envelope)", True)
b2 = bytes.fromhex(W["batch.v2"])
check("wire.batch v2 (rules 2: same layout, version byte 2)", b2[0] == 2 and b2[1:] == bytes.fromhex(W["batch"])[1:]
      and bytes.fromhex(W["batch"])[0] == 1)
b3 = bytes.fromhex(W["batch.v3"])
t = int.from_bytes(b2[17:25], "big")
check("wire.batch v3 (link to the device's previous batch: tag 1, stamp, BLAKE2b-256 of domain and envelope)",
      b3[0] == 3 and b3[1:25] == b2[1:25] and b3[25] == 1 and int.from_bytes(b3[26:34], "big") == t - 1_000_000_000
      and b3[34:66] == hashlib.blake2b(b"lockfs batch link v1" + bytes([0, 1, 2]), digest_size=32).digest()
      and b3[66:] == b2[25:])
a3 = bytes.fromhex(W["batch.v3.attestation"])
check("wire.batch v3 attestation (first link, no operation)", a3 == bytes([3]) + b2[1:25] + bytes([0]) + (0).to_bytes(4, "big"))
p1, p2 = bytes.fromhex(W["api.entry-page"]), bytes.fromhex(W["api.entry-page.v2"])
check("wire.entry page v2 (after seq and the head there, then as version 1)",
      p1[0] == 1 and p2[0] == 2 and p2[1:9] == bytes(8) and p2[9:41] == genesis and p2[41:] == p1[1:])
name_len = int.from_bytes(op[33:35], "big")
check("wire.create op", op[0] == 1 and op[1:17] == ids16(0x10) and op[17:33] == bytes(16)
      and op[35:35 + name_len] == b"report.pdf" and op[35 + name_len:51 + name_len] == ids16(0x20)
      and int.from_bytes(op[51 + name_len:55 + name_len], "big") == 0o644)

k = bytes.fromhex(W["keyring"])
p_len = int.from_bytes(k[46:48], "big")
slot = k[48:48 + p_len]
check("wire.keyring", k[0] == 1 and k[1:17] == VAULT and k[17:46] == params and slot[1] == 4)

# Keyring v2 (key generations): generation 3 of MKs 60.., 40.., 00..; the recovery seal
# and the phone's seal (X25519 90..af) give MK3; the links give MK2, then MK1.
k2 = bytes.fromhex(W["keyring.v2"])
g = int.from_bytes(k2[46:50], "big")
pos = 82
def take16(buf, at):
    n = int.from_bytes(buf[at:at + 2], "big")
    return buf[at + 2:at + 2 + n], at + 2 + n
pw_slot, pos = take16(k2, pos)
rseal, pos = take16(k2, pos)
links = []
nlinks, pos = int.from_bytes(k2[pos:pos + 2], "big"), pos + 2
for _ in range(nlinks):
    l, pos = take16(k2, pos)
    links.append(l)
ndev = int.from_bytes(k2[pos:pos + 2], "big")
dev_id, dseal = k2[pos + 2:pos + 18], take16(k2, pos + 18)[0]
rbox2 = nacl.public.PrivateKey(kdf(bytes(range(0x70, 0x90)), 3, b"lockfsRK"))
mk3 = bytes(range(0x60, 0x80)); mk2 = bytes(range(0x40, 0x60))
opened = nacl.public.SealedBox(rbox2).decrypt(rseal)
dev_opened = nacl.public.SealedBox(nacl.public.PrivateKey(bytes(range(0x90, 0xB0)))).decrypt(dseal)
l3 = open_envelope_any(links[0], 6, kdf(mk3, 5, b"lockfsMK"), VAULT + (2).to_bytes(4, "big"))
l2 = open_envelope_any(links[1], 6, kdf(mk2, 5, b"lockfsMK"), VAULT + (1).to_bytes(4, "big"))
check("wire.keyring.v2 (recovery and device seals give MK3, links give MK2 and MK1)",
      k2[0] == 2 and g == 3 and k2[50:82] == bytes(rbox2.public_key) and opened == (3).to_bytes(4, "big") + mk3
      and dev_id == ids16(0x40) and dev_opened == opened and l3 == mk2 and l2 == MK and ndev == 1)

# AWS Signature Version 4 (Tests/Vectors/sigv4.json): botocore computes each
# canonical request, string to sign and Authorization header from the request.
from urllib.parse import quote

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

S = json.loads((pathlib.Path(__file__).parent / "sigv4.json").read_text())
for suite in S["suites"]:
    creds = Credentials(suite["accessKeyId"], suite["secretAccessKey"])
    for case in suite["cases"]:
        headers = case["headers"]
        host = next(v for k, v in headers if k.lower() == "host")
        amz_date = next(v for k, v in headers if k.lower() == "x-amz-date")
        # S3 takes the path as given (already encoded, never normalized); SigV4Auth encodes it itself.
        path = quote(case["path"], safe="/~") if suite["s3"] else case["path"]
        request = AWSRequest(method=case["method"], url="https://" + host + path, data=case["body"].encode(),
                             params=[(k, v) for k, v in case["query"]])
        for k, v in headers:
            request.headers[k] = v  # appends: a repeated name keeps every value, in order
        request.context["timestamp"] = amz_date
        auth = (S3SigV4Auth if suite["s3"] else SigV4Auth)(creds, suite["service"], suite["region"])
        creq = auth.canonical_request(request)
        sts = auth.string_to_sign(request, creq)
        signed = auth.signed_headers(auth.headers_to_sign(request))
        authz = (f"AWS4-HMAC-SHA256 Credential={auth.scope(request)}, SignedHeaders={signed}, "
                 f"Signature={auth.signature(sts, request)}")
        name = f"sigv4.{suite['name']}.{case['name']}"
        expected_authz = case["authz"]
        if suite["s3"]:  # the S3 documentation writes no space after the commas
            authz = authz.replace(", ", ",")
        check(name, ("creq" not in case or creq == case["creq"]) and sts == case["sts"] and authz == expected_authz)

sys.exit(1 if failures else 0)

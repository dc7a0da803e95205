"""Secrets at rest: AES-256-GCM with a key from the environment, rotatable.

`LUNOGRAM_ENCRYPTION_KEY` (base64 of 32 random bytes) encrypts; it and any keys in
`LUNOGRAM_ENCRYPTION_KEYS_OLD` (comma-separated) decrypt. A sealed value is

    0x01 | key id (4 bytes) | nonce (12 bytes) | ciphertext and GCM tag

The key id (the first 4 bytes of SHA-256 over a label and the key) names the key that sealed it, so old
keys can stay readable after a rotation without trying each. The version byte, the key id and a
caller's `context` (e.g. the row's id) are authenticated too: a value copied into another row, or edited,
does not decrypt.

A server on its embedded PostgreSQL without a key makes one once, in `<data dir>/encryption.key` (mode
0600), so that one command starts a server that can store secrets. A server on DATABASE_URL never makes
one: its processes could not agree on it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lunogram_server.config import Settings

KEY_ENV = "LUNOGRAM_ENCRYPTION_KEY"
OLD_KEYS_ENV = "LUNOGRAM_ENCRYPTION_KEYS_OLD"
KEY_FILE = "encryption.key"
_VERSION = 1
_HEADER = 1 + 4
_NONCE = 12


class NoEncryptionKey(RuntimeError):
    """This server has no key, so it cannot store a secret."""

    def __init__(self) -> None:
        super().__init__(
            f"this server has no encryption key for secrets: set {KEY_ENV} (base64 of 32 random bytes, e.g. the "
            "output of `openssl rand -base64 32`) on every server process, then try again"
        )


class Undecryptable(RuntimeError):
    """A stored secret that none of the configured keys opens."""


def parse_key(text: str, name: str = KEY_ENV) -> bytes:
    """32 key bytes from base64 (standard or URL-safe, padding optional); ValueError naming the rule."""
    cleaned = text.strip().replace("-", "+").replace("_", "/").rstrip("=")
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: must be base64 of 32 random bytes (e.g. `openssl rand -base64 32`)") from None
    if len(raw) != 32:
        raise ValueError(f"{name}: must be base64 of 32 bytes, not {len(raw)} (e.g. `openssl rand -base64 32`)")
    return raw


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"lunogram encryption key id\0" + key).digest()[:4]


def generate_key() -> str:
    return base64.b64encode(os.urandom(32)).decode("ascii")


class Keyring:
    """The current key (seals) and the old ones (open what they sealed)."""

    def __init__(self, current: bytes, old: Sequence[bytes] = ()) -> None:
        self._current = current
        self._current_id = key_id(current)
        self._keys = {key_id(key): AESGCM(key) for key in (*old, current)}

    @property
    def current_id(self) -> str:
        return self._current_id.hex()

    def seal(self, plaintext: bytes, context: bytes = b"") -> bytes:
        header = bytes([_VERSION]) + self._current_id
        nonce = os.urandom(_NONCE)
        return header + nonce + self._keys[self._current_id].encrypt(nonce, plaintext, header + context)

    def open(self, sealed: bytes, context: bytes = b"") -> bytes:
        if len(sealed) < _HEADER + _NONCE + 16 or sealed[0] != _VERSION:
            raise Undecryptable("not a sealed value of a known format")
        header, nonce, body = sealed[:_HEADER], sealed[_HEADER : _HEADER + _NONCE], sealed[_HEADER + _NONCE :]
        cipher = self._keys.get(header[1:])
        if cipher is None:
            raise Undecryptable(
                f"sealed with key {header[1:].hex()}, which is neither {KEY_ENV} ({self.current_id}) nor one of "
                f"{OLD_KEYS_ENV}; was the key changed without keeping the old one there?"
            )
        try:
            return cipher.decrypt(nonce, body, header + context)
        except InvalidTag:
            raise Undecryptable("the sealed value was altered or belongs elsewhere") from None

    def sealed_with_current(self, sealed: bytes) -> bool:
        """False for values sealed by an old key (re-seal them to finish a rotation)."""
        return sealed[1:_HEADER] == self._current_id


def key_file(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


def ensure_key_file(data_dir: Path) -> tuple[Path, bool]:
    """The embedded server's key file, made (0600) when missing: (its path, whether it was made now)."""
    path = key_file(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path, False
    with os.fdopen(fd, "w") as handle:
        handle.write(generate_key() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path, True


def keyring(settings: Settings) -> Keyring | None:
    """The settings' keys: LUNOGRAM_ENCRYPTION_KEY, else (embedded only) the data dir's key file; None
    when there is neither. ValueError for a malformed key."""
    old = [parse_key(part, OLD_KEYS_ENV) for part in settings.encryption_keys_old.split(",") if part.strip()]
    if settings.encryption_key:
        return Keyring(parse_key(settings.encryption_key), old)
    if settings.embedded:
        path = key_file(settings.data_dir)
        if path.exists():
            return Keyring(parse_key(path.read_text(), str(path)), old)
    return None

#!/usr/bin/env python3
"""Independent oracle: decrypt a vmcrypt payload with OpenSSL (through Python `cryptography`).

Usage: xts_decrypt.py PAYLOAD SECTOR_SIZE OUTPUT [OFFSET_SECTORS]   (the 64-byte XTS key comes
as hex on stdin, never on the command line). OFFSET_SECTORS is the dm-table's device offset:
where the payload starts in the file, in 512-byte sectors. Each data unit of SECTOR_SIZE bytes is decrypted with AES-256-XTS
under the tweak "number of its first 512-byte sector, 128-bit little-endian", the dm-crypt
aes-xts-plain64 convention vmcrypt promises.
"""
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def main() -> int:
    payload, unit, output = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    skip = int(sys.argv[4]) * 512 if len(sys.argv) > 4 else 0
    key = bytes.fromhex(sys.stdin.readline().strip())
    if len(key) != 64:
        print("key must be 64 bytes", file=sys.stderr)
        return 2
    with open(payload, "rb") as src, open(output, "wb") as dst:
        src.seek(skip)
        offset = 0
        while True:
            block = src.read(unit)
            if not block:
                break
            if len(block) != unit:
                print("payload is not whole data units", file=sys.stderr)
                return 2
            tweak = (offset // 512).to_bytes(16, "little")
            d = Cipher(algorithms.AES(key), modes.XTS(tweak)).decryptor()
            dst.write(d.update(block) + d.finalize())
            offset += unit
    return 0


if __name__ == "__main__":
    sys.exit(main())

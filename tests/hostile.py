"""Hostile spec files too big or too binary to commit: (file name, bytes, expected message) triples."""

from __future__ import annotations

import random

from mnist_keras.spec.loader import MAX_BYTES

MODEL = b"model: {layers: [flatten, {dense: 10}]}\n"


def _billion_laughs(levels: int = 9) -> bytes:
    lines = [b'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]".encode())
    return b"\n".join(lines) + b"\n" + MODEL


def generated_specs() -> list[tuple[str, bytes, str]]:
    garbage = random.Random(8).randbytes(4096)
    return [
        ("too_large.yaml", MODEL + b"description: '" + b"x" * MAX_BYTES + b"'\n",
         ":1:1: (top level): 1,000,056 bytes is too large for a spec (limit 1,000,000)"),
        ("long_list.yaml", MODEL + b"description: [" + b"1, " * 300_000 + b"1]\n",
         ": description[19989]: the spec has over 20,000 YAML nodes; a spec needs a few hundred"),
        ("many_keys.yaml", MODEL + b"train:\n" + b"".join(b"  k%d: %d\n" % (i, i) for i in range(60_000)),
         ":9997:10: train.k9994: the spec has over 20,000 YAML nodes"),
        ("deep_flow.yaml", MODEL + b"description: " + b"[" * 400_000 + b"]" * 400_000 + b"\n",
         ":2:45: description" + "[0]" * 31 + ": nested more than 32 levels deep"),
        ("deep_block.yaml", MODEL + b"train:\n" + b"".join(b" " * (i + 1) + b"a:\n" for i in range(1000)),
         ":34:33: train" + ".a" * 31 + ": nested more than 32 levels deep"),
        ("deep_seq.yaml", MODEL + b"description:\n" + b"".join(b"  " * i + b"- \n" for i in range(700)),
         ":34:63: description" + "[0]" * 31 + ": nested more than 32 levels deep"),
        ("billion_laughs.yaml", _billion_laughs(), "the spec expands to over 20,000 YAML nodes (an alias/anchor bomb?)"),
        ("garbage.yaml", garbage, ": (top level): a binary file, not a YAML spec"),
        ("png.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + garbage[:200], ":3:1: (top level): a binary file"),
        ("utf16.yaml", "model: {layers: [flatten]}\n".encode("utf-16"), ":1:4: (top level): a binary file"),
        ("nul_late.yaml", MODEL + b"name: ab\x00c\n", ":2:9: (top level): a binary file"),
        ("latin1.yaml", MODEL + "description: café\n".encode("latin-1"),
         ":2:17: (top level): not UTF-8 text (byte 0xe9 at offset 56)"),
        ("cp1252_quotes.yaml", MODEL + b"name: \x93lenet\x94\n", ":2:7: (top level): not UTF-8 text (byte 0x93"),
        ("lone_continuation.yaml", b"\x80" + MODEL, ":1:1: (top level): not UTF-8 text (byte 0x80 at offset 0)"),
        ("control_char.yaml", MODEL + b"name: a\x01b\n",
         ":2:8: (top level): the control character U+0001 is not allowed in a YAML spec"),
        ("escape_sequence.yaml", MODEL + b"description: \x1b[31mred\n", ":2:14: (top level): the control character U+001B"),
        ("huge_int.yaml", MODEL + b"train: {epochs: " + b"9" * 5000 + b"}\n",
         ":2:17: train.epochs: a number of 5,000 characters is out of range"),
        ("huge_hex_int.yaml", MODEL + b"seed: 0x" + b"f" * 100 + b"\n",
         ":2:7: seed: a number of 102 characters is out of range"),
    ]

"""Hostile spec files too big or too binary to commit: (file name, bytes, expected message) triples."""

from __future__ import annotations

import random

from mnist_keras.spec.yamlfile import MAX_BYTES

MODEL = b"model: {layers: [flatten, {dense: 10}]}\n"


def _billion_laughs(levels: int = 9) -> bytes:
    lines = [b'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]".encode())
    return b"\n".join(lines) + b"\n" + MODEL


def _huge_echoes() -> list[tuple[str, bytes, str]]:
    """Half-megabyte names, values, keys, tags and anchors: each is quoted clipped, never whole."""
    big, clipped = b"x" * 500_000, "'" + "x" * 27 + "..." + "x" * 28 + "'"
    return [
        ("huge_name.yaml", MODEL + b"name: " + big + b"\n", ":2:1: name: a name is 1-64 letters"),
        ("huge_activation.yaml", b"model: {layers: [flatten, {dense: {units: 10, activation: " + big + b"}}]}\n",
         ", got " + clipped),
        ("huge_key.yaml", MODEL + b"train:\n  ? " + big + b"\n  : 1\n", "unknown key 'xxx"),
        ("huge_top_key.yaml", MODEL + b"? " + big + b"\n: 1\n", ":2:3: xxxxxxxxxx"),
        ("huge_duplicate_key.yaml", MODEL + b"train:\n  ? " + big[:200_000] + b"\n  : 1\n  ? " + big[:200_000]
         + b"\n  : 2\n", "x' (first given on line 3)"),
        ("huge_list_key.yaml", MODEL + b"train:\n  ? [" + b"a, " * 2_000 + b"a]\n  : 1\n",
         ":3:5: train.[a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,: a key is a name (text), not a list"),
        ("bomb_key.yaml", _billion_laughs(8) + b"? *l7\n: 1\n", "a key is a name (text), not a list"),
        ("huge_tag.yaml", MODEL + b"seed: !" + big + b" 3\n", ":2:7: seed: the YAML tag '!xxx"),
        ("huge_alias.yaml", MODEL + b"seed: *" + big + b"\n", ":2:7: seed: the alias *xxx"),
        ("huge_layer.yaml", b"model: {layers: [flatten, " + big + b", {dense: 10}]}\n",
         f":1:27: model.layers[1]: unknown layer {clipped}"),
        ("huge_device.yaml", MODEL + b"runtime: {device: " + big + b"}\n", f"got {clipped}"),
        ("huge_optimizer.yaml", MODEL + b"train: {optimizer: " + big + b"}\n", "train.optimizer.type: unknown type 'xxx"),
        ("huge_quoted_name.yaml", MODEL + b"name: '" + b"a'' b" * 20_000 + b"'\n", "got \"a' ba' b"),
        ("huge_string_for_int.yaml", MODEL + b"train: {epochs: '" + b"9 " * 50_000 + b"'}\n",
         "train.epochs: expected an integer, got '9 9 9"),
    ]


def generated_specs() -> list[tuple[str, bytes, str]]:
    garbage = random.Random(8).randbytes(4096)
    return _huge_echoes() + [
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

"""Generate protocol/vectors/cid.json (run once from the repo root:
`PYTHONPATH=. .venv/bin/python protocol/vectors/make_cid.py`).

Sections:
- `published`: CIDs printed by go-ipfs/kubo for known bytes, copied from public sources
  (not computed here); the generator only checks that our code agrees before writing.
- `blobs`: CIDs of blobs given by recipe (so 45 MB inputs need not be stored), computed
  by p2pfl.core.cid and anchored by the published section and the layout tests.
- `dag_pb_valid` / `dag_pb_invalid`: blocks a decoder must accept (with what it reads)
  or reject.
- `cid_text_invalid`: CID strings a parser must reject.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from p2pfl.core import cid as C

OUT = Path(__file__).with_name("cid.json")


def recipe_bytes(recipe: dict) -> bytes:
    """Materialise a blob recipe: `mod251` = byte i is i % 251; `zeros`; `ascii`."""
    kind = recipe["kind"]
    if kind == "mod251":
        size = recipe["size"]
        pattern = np.arange(251, dtype=np.uint8)
        return np.tile(pattern, size // 251 + 1)[:size].tobytes()
    if kind == "zeros":
        return bytes(recipe["size"])
    if kind == "ascii":
        return recipe["text"].encode("ascii")
    raise ValueError(kind)


# Published by go-ipfs, with chunk size and max links as shown, `--raw-leaves` and CIDv0
# internal nodes (so roots print as Qm...). Source: filecoin-project/cpp-filecoin,
# core/storage/unixfs unixfs_test.cpp "MatchGo" (generated with go-ipfs). The data is
# the literal ASCII string. They pin the balanced layout (including a lone last leaf
# getting its own parent), Name="" and Tsize in links, and the UnixFS Data encoding.
GO_SMALL = [
    ("[0     9)", 10, 2, "bafkreieqjdswwovkokzitxxsn4ppswzzsy2qs623duz5ivjhplglbygbou"),
    ("[0     10)", 10, 2, "bafkreiaymswyg525nktwb75n53rcwdqvjbfjgi5nu4glriglylthbnuxnu"),
    ("[0     10)[10   19)", 10, 2, "QmUyaoLFxpUpZra4qs65dMbrBMEERJt91JL3kdyKEXqLxN"),
    ("[0     10)[10     21)", 10, 2, "QmZ9KupPPphsds2Cbu7Ntb73tUHbyrZEgJisHMmw9AUfQP"),
    ("[0     10)[10    20)[10    30)", 10, 2, "QmSYvtzqeJY6zCRk31SdRweDD6z1bwP9GJY5bmKQ55XwWp"),
    ("[0     10)[10    20)[10     31)", 10, 2, "QmZ2Be9hJQhifpgASmQTGkL7j9KUaJC5W9siL6MnFSkLhd"),
    ("[0     10)[10    20)[10    30)", 5, 3, "QmYb4gZGCAkRdNZbc5npDzLJA34ZzPtdVDmESb9Xk76Ws2"),
]

# kubo defaults (`ipfs add --cid-version 1`), single raw leaf.
KUBO_DEFAULTS = [
    # The empty file: a raw leaf of no bytes (kubo >= 0.4.14; see ipfs/kubo#4688).
    ("", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
    # `echo "hello world" | ipfs add --cid-version 1 -q` (ipfs/js-ipfs#3682).
    ("hello world\n", "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"),
]

CHUNK = C.CHUNK_SIZE
BLOB_RECIPES = [
    ("empty", {"kind": "mod251", "size": 0}),
    ("one-byte", {"kind": "mod251", "size": 1}),
    ("chunk-minus-1", {"kind": "mod251", "size": CHUNK - 1}),
    ("one-chunk", {"kind": "mod251", "size": CHUNK}),
    ("chunk-plus-1", {"kind": "mod251", "size": CHUNK + 1}),
    ("three-chunks-partial", {"kind": "mod251", "size": 2 * CHUNK + 1000}),
    ("zeros-1MiB", {"kind": "zeros", "size": 4 * CHUNK}),
    # 174 chunks: the widest one-level tree.
    ("174-chunks", {"kind": "mod251", "size": 174 * CHUNK}),
    # 175 chunks (45.6 MB + 1 byte): two levels, the last leaf alone under its own parent.
    ("175-chunks-two-levels", {"kind": "mod251", "size": 174 * CHUNK + 1}),
    # Two full level-1 subtrees and a partial third.
    ("two-levels-3-subtrees", {"kind": "mod251", "size": 2 * 174 * CHUNK + 3 * CHUNK + 7}),
]


def blob_entry(name: str, recipe: dict) -> dict:
    data = recipe_bytes(recipe)
    root, blocks = C.blob_blocks(data)
    entry: dict = {
        "name": name,
        "recipe": recipe,
        "size": len(data),
        "cid": str(root),
        "leaves": sum(1 for c, _ in blocks if c.codec == C.CODEC_RAW),
        "internal_nodes": sum(1 for c, _ in blocks if c.codec == C.CODEC_DAG_PB),
        "dag_bytes": sum(len(b) for _, b in blocks),
    }
    if root.codec == C.CODEC_DAG_PB and len(blocks) <= 8:
        entry["root_block_hex"] = blocks[-1][1].hex()
    return entry


def dag_pb_cases() -> tuple[list[dict], list[dict]]:
    data = recipe_bytes({"kind": "mod251", "size": 2 * CHUNK + 1000})
    root, blocks = C.blob_blocks(data)
    good = blocks[-1][1]
    node = C.decode_dag_pb(good)
    valid = [
        {
            "name": "three-leaf-root",
            "hex": good.hex(),
            "cid": str(root),
            "links": [[str(link.cid), link.tsize] for link in node.links],
            "filesize": node.filesize,
            "blocksizes": list(node.blocksizes),
        }
    ]
    leaf = blocks[0][0].to_bytes()

    def link(hash_bytes: bytes, tail: bytes = b"\x12\x00\x18\x05") -> bytes:
        body = b"\x0a" + bytes([len(hash_bytes)]) + hash_bytes + tail
        return b"\x12" + bytes([len(body)]) + body

    unixfs = b"\x08\x02\x18\x05\x20\x05"

    def node_with(links: bytes, data_field: bytes = unixfs) -> bytes:
        return links + b"\x0a" + bytes([len(data_field)]) + data_field

    invalid = [
        ("empty", b""),
        ("truncated", good[:-1]),
        ("trailing-byte", good + b"\x00"),
        ("no-links", node_with(b"", b"\x08\x02\x18\x00")),
        ("data-before-links", b"\x0a\x06" + unixfs + link(leaf)),
        ("name-omitted", node_with(link(leaf, b"\x18\x05"))),
        ("tsize-omitted", node_with(link(leaf, b"\x12\x00"))),
        ("name-not-empty", node_with(link(leaf, b"\x12\x01a\x18\x05"))),
        ("cidv0-link", node_with(link(leaf[2:]))),
        ("dag-cbor-link", node_with(link(b"\x01\x71" + leaf[2:]))),
        ("non-minimal-tsize", node_with(link(leaf, b"\x12\x00\x18\x85\x00"))),
        ("type-raw", node_with(link(leaf), b"\x08\x00\x18\x05\x20\x05")),
        ("filesize-mismatch", node_with(link(leaf), b"\x08\x02\x18\x06\x20\x05")),
        ("filesize-omitted", node_with(link(leaf), b"\x08\x02\x20\x05")),
        ("blocksizes-packed", node_with(link(leaf), b"\x08\x02\x18\x05\x22\x01\x05")),
        ("missing-blocksize", node_with(link(leaf), b"\x08\x02\x18\x00")),
        ("inline-data", node_with(link(leaf), b"\x08\x02\x12\x01x\x18\x05\x20\x05")),
        ("varint-over-64-bits", node_with(link(leaf, b"\x12\x00\x18" + b"\xff" * 10 + b"\x01"))),
    ]
    for _, block in invalid:  # the generator checks its own negatives
        try:
            C.decode_dag_pb(block)
        except C.InvalidBlock:
            continue
        raise AssertionError(block.hex())
    return valid, [{"name": n, "hex": b.hex()} for n, b in invalid]


def cid_text_invalid() -> list[dict]:
    good = str(C.blob_cid(b"hello world\n"))
    raw = C.CID.parse(good).to_bytes()

    def b32(data: bytes) -> str:
        return "b" + base64.b32encode(data).decode().rstrip("=").lower()

    # 288 bits fill 58 base32 digits with 2 bits to spare: setting a spare bit gives a
    # second spelling of the same bytes, which must be refused.
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    bumped = good[:-1] + alphabet[alphabet.index(good[-1]) | 1]
    cases = [
        ("empty", ""),
        ("uppercase", good.upper()),
        ("base32-upper-prefix", "B" + good[1:].upper()),
        ("cidv0", "QmUyaoLFxpUpZra4qs65dMbrBMEERJt91JL3kdyKEXqLxN"),
        ("truncated", good[:-1]),
        ("extra-char", good + "a"),
        ("trailing-bits-set", bumped),
        ("padding", good + "===="),
        ("dag-cbor-codec", b32(b"\x01\x71" + raw[2:])),
        ("sha2-512", b32(b"\x01\x55\x13\x40" + bytes(64))),
        ("version-2", b32(b"\x02" + raw[1:])),
        ("base58btc-multibase", "z" + good[1:]),
        ("whitespace", " " + good[:-1]),
    ]
    for _, text in cases:
        try:
            C.CID.parse(text)
        except C.InvalidMessage:
            continue
        raise AssertionError(text)
    return [{"name": n, "text": t} for n, t in cases]


def main() -> None:
    published_small = []
    for text, chunk_size, max_links, expected in GO_SMALL:
        published_small.append(
            {
                "data_ascii": text,
                "chunk_size": chunk_size,
                "max_links": max_links,
                "internal_cid_version": 0,
                "cid": expected,
            }
        )
    published_kubo = [{"data_ascii": t, "cid": c} for t, c in KUBO_DEFAULTS]
    for entry in published_kubo:
        assert str(C.blob_cid(entry["data_ascii"].encode())) == entry["cid"], entry
    valid, invalid = dag_pb_cases()
    doc = {
        "about": "CIDv1 sha2-256 of blobs as `ipfs add --cid-version 1` (kubo defaults); "
        "see protocol/spec/cid.md. Generated by protocol/vectors/make_cid.py.",
        "constants": {
            "chunk_size": C.CHUNK_SIZE,
            "max_links": C.MAX_LINKS,
            "codec_raw": C.CODEC_RAW,
            "codec_dag_pb": C.CODEC_DAG_PB,
        },
        "published_kubo_defaults": published_kubo,
        "published_go_small_params": published_small,
        "blobs": [blob_entry(n, r) for n, r in BLOB_RECIPES],
        "dag_pb_valid": valid,
        "dag_pb_invalid": invalid,
        "cid_text_invalid": cid_text_invalid(),
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

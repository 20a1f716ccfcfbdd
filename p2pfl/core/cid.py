"""Content addressing: IPFS-compatible CIDs for blobs, and strict DAG verification.

A blob (a serialised model or delta) gets exactly the CID that `ipfs add --cid-version 1`
prints for the same bytes with kubo's defaults (spec: protocol/spec/cid.md):

- fixed-size chunker, 262144-byte chunks ("size-262144");
- every chunk is a *raw leaf* (codec raw 0x55, CIDv1, sha2-256);
- a blob of at most one chunk (the empty blob included) is that raw leaf alone;
- larger blobs get go-unixfs' *balanced* layout: a complete 174-ary tree, every leaf at the
  same depth, filled left to right; internal nodes are dag-pb (0x70) with UnixFS
  `Data{Type=File, filesize, blocksizes}` and links `{Hash, Name="", Tsize}`.

Everything here is pure: no I/O, no clocks. Decoders are strict and canonical: a block is
accepted only if re-encoding what was read reproduces it byte for byte, and any bytes at
all make them raise `InvalidBlock` (or `InvalidMessage` for CID text), never anything else.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from p2pfl.errors import InvalidBlock, InvalidMessage

# --- constants ----------------------------------------------------------------------------

CID_VERSION = 1
# Multicodec codes (multiformats table). Both are < 0x80, so each is a 1-byte varint.
CODEC_RAW = 0x55
CODEC_DAG_PB = 0x70
SUPPORTED_CODECS = (CODEC_RAW, CODEC_DAG_PB)
# Multihash sha2-256: code 0x12, digest length 32.
MULTIHASH_SHA2_256 = 0x12
DIGEST_SIZE = 32
# Binary CIDv1 = version, codec, multihash code, digest length, digest: always 36 bytes here.
CID_BYTES_SIZE = 4 + DIGEST_SIZE
# Multibase prefix of lowercase RFC 4648 base32 without padding (what kubo prints for v1).
MULTIBASE_BASE32 = "b"
# 36 bytes = 288 bits -> ceil(288 / 5) = 58 base32 characters, plus the prefix.
CID_TEXT_SIZE = 1 + 58

# kubo's default chunker "size-262144" (256 KiB).
CHUNK_SIZE = 262144
# go-unixfs balanced layout: helpers.DefaultLinksPerBlock = 174 links per internal node.
MAX_LINKS = 174
# Largest block we accept from anyone: Bitswap peers refuse blocks over 2 MiB, and no block
# of a canonical DAG comes near it (leaves <= 256 KiB, internal nodes ~ 9 KiB).
MAX_BLOCK_SIZE = 2 * 1024 * 1024
# A canonical DAG of depth 8 would already address 174**8 * 256 KiB (~ 2.2e23 bytes);
# deeper DAGs are rejected so a hostile DAG cannot make a walker recurse without bound.
MAX_DAG_DEPTH = 8

# UnixFS Data.Type = File.
UNIXFS_TYPE_FILE = 2

# Protobuf tags (field number << 3 | wire type) in the canonical order kubo writes them.
_TAG_PBNODE_LINKS = 0x12  # PBNode.Links = 2, length-delimited (written before Data)
_TAG_PBNODE_DATA = 0x0A  # PBNode.Data = 1, length-delimited
_TAG_PBLINK_HASH = 0x0A  # PBLink.Hash = 1, bytes
_TAG_PBLINK_NAME = 0x12  # PBLink.Name = 2, string (kubo always writes it, empty)
_TAG_PBLINK_TSIZE = 0x18  # PBLink.Tsize = 3, varint (always written)
_TAG_UNIXFS_TYPE = 0x08  # Data.Type = 1, varint
_TAG_UNIXFS_FILESIZE = 0x18  # Data.filesize = 3, varint (always written)
_TAG_UNIXFS_BLOCKSIZE = 0x20  # Data.blocksizes = 4, varint, repeated, not packed (proto2)

_U64_MAX = (1 << 64) - 1
_BASE32_TEXT = re.compile(r"[a-z2-7]+")


# --- CID ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CID:
    """A CIDv1 with a sha2-256 multihash; `codec` is CODEC_RAW or CODEC_DAG_PB."""

    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.codec not in SUPPORTED_CODECS:
            raise InvalidMessage("bad-cid", f"codec 0x{self.codec:x} is not raw or dag-pb")
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_SIZE:
            raise InvalidMessage("bad-cid", "digest must be 32 bytes of sha2-256")

    def to_bytes(self) -> bytes:
        """Binary CIDv1: version, codec, multihash code, length, digest (36 bytes)."""
        return bytes((CID_VERSION, self.codec, MULTIHASH_SHA2_256, DIGEST_SIZE)) + self.digest

    def __str__(self) -> str:
        text = base64.b32encode(self.to_bytes()).decode("ascii").rstrip("=").lower()
        return MULTIBASE_BASE32 + text

    def __repr__(self) -> str:
        return f"CID({self})"

    @classmethod
    def parse(cls, value: str | bytes) -> CID:
        """Parse a CID from its text (`b...` base32) or binary form, strictly.

        Only the canonical forms `str()` / `to_bytes()` produce are accepted: CIDv1,
        raw or dag-pb, sha2-256, nothing trailing. Anything else raises
        `InvalidMessage("bad-cid", ...)`.
        """
        if isinstance(value, str):
            return cls._parse_text(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls._parse_binary(bytes(value))
        raise InvalidMessage("bad-cid", f"expected str or bytes, got {type(value).__name__}")

    @classmethod
    def _parse_text(cls, text: str) -> CID:
        if len(text) != CID_TEXT_SIZE or not text.startswith(MULTIBASE_BASE32):
            raise InvalidMessage(
                "bad-cid", f"expected {CID_TEXT_SIZE} chars of base32 CIDv1 starting with 'b'"
            )
        body = text[1:]
        if not _BASE32_TEXT.fullmatch(body):
            raise InvalidMessage("bad-cid", "not lowercase base32 (a-z, 2-7)")
        padded = body.upper() + "=" * (-len(body) % 8)
        raw = base64.b32decode(padded)
        cid = cls._parse_binary(raw)
        if str(cid) != text:  # non-zero trailing bits: a second spelling of the same bytes
            raise InvalidMessage("bad-cid", "non-canonical base32 (trailing bits set)")
        return cid

    @classmethod
    def _parse_binary(cls, raw: bytes) -> CID:
        if len(raw) != CID_BYTES_SIZE:
            raise InvalidMessage("bad-cid", f"binary CID must be {CID_BYTES_SIZE} bytes")
        if raw[0] != CID_VERSION:
            raise InvalidMessage("bad-cid", f"version {raw[0]} is not CIDv1")
        if raw[1] not in SUPPORTED_CODECS:
            raise InvalidMessage("bad-cid", f"codec 0x{raw[1]:x} is not raw or dag-pb")
        if raw[2] != MULTIHASH_SHA2_256 or raw[3] != DIGEST_SIZE:
            raise InvalidMessage("bad-cid", "multihash is not sha2-256 with a 32-byte digest")
        return cls(raw[1], raw[4:])


def digest_to_cid(digest: bytes, codec: int) -> CID:
    """Rebuild a CID from its 32-byte digest (how a CID travels on-chain) and codec."""
    return CID(codec, bytes(digest))


def raw_cid(block: bytes | memoryview) -> CID:
    """CID of `block` as a raw leaf."""
    return CID(CODEC_RAW, hashlib.sha256(block).digest())


def block_cid(codec: int, block: bytes | memoryview) -> CID:
    """CID of `block` under `codec`."""
    return CID(codec, hashlib.sha256(block).digest())


def verify_block(cid: CID, block: bytes | memoryview) -> None:
    """Raise `InvalidBlock` unless `block` hashes to `cid` (and fits MAX_BLOCK_SIZE)."""
    if len(block) > MAX_BLOCK_SIZE:
        raise InvalidBlock(f"block for {cid} is {len(block)} bytes, over {MAX_BLOCK_SIZE}")
    if hashlib.sha256(block).digest() != cid.digest:
        raise InvalidBlock(f"block does not hash to {cid}")


# --- varints ------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 (protobuf varint), minimal length."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a minimal varint of at most 64 bits from buf[pos:end]; return (value, new pos)."""
    value = 0
    shift = 0
    while True:
        if pos >= end:
            raise InvalidBlock("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and shift > 0:
                raise InvalidBlock("non-minimal varint")
            if value > _U64_MAX:
                raise InvalidBlock("varint over 64 bits")
            return value, pos
        shift += 7
        if shift > 63:
            raise InvalidBlock("varint over 64 bits")


# --- dag-pb -------------------------------------------------------------------------------


class Link(NamedTuple):
    """One dag-pb link: the child's CID and Tsize (bytes of every block under it)."""

    cid: CID
    tsize: int


class DagPbNode(NamedTuple):
    """A decoded UnixFS file node: its links, file size and per-child content sizes."""

    links: tuple[Link, ...]
    filesize: int
    blocksizes: tuple[int, ...]


def encode_dag_pb(links: Sequence[Link], blocksizes: Sequence[int]) -> bytes:
    """Encode an internal UnixFS file node exactly as kubo does.

    Layout: every `PBNode.Links` entry first, then `PBNode.Data`; a link is
    `Hash(36-byte CIDv1) Name("") Tsize`; Data is `Type=File filesize blocksizes...`
    with filesize = sum(blocksizes) and blocksizes not packed.
    """
    return _encode_node(links, blocksizes, CID.to_bytes)


def _encode_node(
    links: Sequence[Link], blocksizes: Sequence[int], link_hash: Callable[[CID], bytes]
) -> bytes:
    if len(links) != len(blocksizes):
        raise ValueError("one blocksize per link")
    out = bytearray()
    for link in links:
        hash_bytes = link_hash(link.cid)
        body = (
            bytes((_TAG_PBLINK_HASH, len(hash_bytes)))
            + hash_bytes
            + bytes((_TAG_PBLINK_NAME, 0, _TAG_PBLINK_TSIZE))
            + encode_varint(link.tsize)
        )
        out += bytes((_TAG_PBNODE_LINKS,)) + encode_varint(len(body)) + body
    data = bytearray((_TAG_UNIXFS_TYPE, UNIXFS_TYPE_FILE, _TAG_UNIXFS_FILESIZE))
    data += encode_varint(sum(blocksizes))
    for size in blocksizes:
        data += bytes((_TAG_UNIXFS_BLOCKSIZE,)) + encode_varint(size)
    out += bytes((_TAG_PBNODE_DATA,)) + encode_varint(len(data)) + data
    return bytes(out)


def _cid_v0_link_hash(cid: CID) -> bytes:
    """How `--cid-version 0` links a child: a dag-pb child by its bare multihash (CIDv0)."""
    return cid.to_bytes()[2:] if cid.codec == CODEC_DAG_PB else cid.to_bytes()


def _expect(buf: bytes, pos: int, end: int, expected: bytes, what: str) -> int:
    if buf[pos : pos + len(expected)] != expected or pos + len(expected) > end:
        raise InvalidBlock(f"dag-pb: expected {what}")
    return pos + len(expected)


def decode_dag_pb(block: bytes | memoryview) -> DagPbNode:
    """Decode a canonical UnixFS file node; raise `InvalidBlock` on anything else.

    Accepted: 1..MAX_LINKS links to CIDv1 raw/dag-pb sha2-256 children, each with an
    empty Name and a Tsize; Data of Type=File with no inline data, filesize equal to
    the sum of blocksizes and one blocksize per link; nothing else, in kubo's field order,
    with minimal varints (re-encoding must give back the same bytes).
    """
    buf = bytes(block)
    end = len(buf)
    if end > MAX_BLOCK_SIZE:
        raise InvalidBlock(f"dag-pb block of {end} bytes is over {MAX_BLOCK_SIZE}")
    pos = 0
    links: list[Link] = []
    while pos < end and buf[pos] == _TAG_PBNODE_LINKS:
        length, pos = _read_varint(buf, pos + 1, end)
        if length > end - pos:
            raise InvalidBlock("dag-pb: link runs past the block")
        link_end = pos + length
        pos = _expect(buf, pos, link_end, bytes((_TAG_PBLINK_HASH, CID_BYTES_SIZE)), "link Hash")
        if link_end - pos < CID_BYTES_SIZE:
            raise InvalidBlock("dag-pb: truncated link Hash")
        try:
            child = CID.parse(buf[pos : pos + CID_BYTES_SIZE])
        except InvalidMessage as exc:
            raise InvalidBlock(f"dag-pb: bad link Hash: {exc}") from None
        pos += CID_BYTES_SIZE
        pos = _expect(buf, pos, link_end, bytes((_TAG_PBLINK_NAME, 0)), 'link Name ""')
        pos = _expect(buf, pos, link_end, bytes((_TAG_PBLINK_TSIZE,)), "link Tsize")
        tsize, pos = _read_varint(buf, pos, link_end)
        if pos != link_end:
            raise InvalidBlock("dag-pb: extra fields in link")
        links.append(Link(child, tsize))
        if len(links) > MAX_LINKS:
            raise InvalidBlock(f"dag-pb: more than {MAX_LINKS} links")
    if not links:
        raise InvalidBlock("dag-pb: a file node needs at least one link")
    pos = _expect(buf, pos, end, bytes((_TAG_PBNODE_DATA,)), "Data after links")
    length, pos = _read_varint(buf, pos, end)
    if length != end - pos:
        raise InvalidBlock("dag-pb: Data must end the block exactly")
    pos = _expect(buf, pos, end, bytes((_TAG_UNIXFS_TYPE, UNIXFS_TYPE_FILE)), "Type=File")
    pos = _expect(buf, pos, end, bytes((_TAG_UNIXFS_FILESIZE,)), "filesize")
    filesize, pos = _read_varint(buf, pos, end)
    blocksizes: list[int] = []
    while pos < end:
        pos = _expect(buf, pos, end, bytes((_TAG_UNIXFS_BLOCKSIZE,)), "blocksizes")
        size, pos = _read_varint(buf, pos, end)
        blocksizes.append(size)
        if len(blocksizes) > MAX_LINKS:
            raise InvalidBlock(f"dag-pb: more than {MAX_LINKS} blocksizes")
    if len(blocksizes) != len(links):
        raise InvalidBlock("dag-pb: need exactly one blocksize per link")
    if sum(blocksizes) != filesize:
        raise InvalidBlock("dag-pb: filesize is not the sum of blocksizes")
    node = DagPbNode(tuple(links), filesize, tuple(blocksizes))
    # Belt and braces: the only accepted spelling is the one we (and kubo) write.
    if encode_dag_pb(node.links, node.blocksizes) != buf:
        raise InvalidBlock("dag-pb: non-canonical encoding")
    return node


# --- building a DAG -----------------------------------------------------------------------


def _as_bytes_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


class _Entry(NamedTuple):
    cid: CID
    content_size: int  # bytes of the blob under this node
    tsize: int  # bytes of every block under this node, itself included


def _build(
    data: bytes | bytearray | memoryview,
    chunk_size: int,
    max_links: int,
    sink: list[tuple[CID, bytes | memoryview]] | None,
    internal_cid_v0: bool = False,
    leaf_views: bool = False,
) -> CID:
    """Chunk `data`, hash the leaves and build the balanced layout level by level.

    Grouping each level into runs of `max_links` (a lone last child still gets its own
    parent) until one node is left gives exactly go-unixfs' balanced.Layout: a complete
    max_links-ary tree with every leaf at the same depth, filled left to right.
    `internal_cid_v0` mimics `--cid-version 0 --raw-leaves` (links to internal nodes hold
    the bare multihash); only tests use it, to check the layout against published vectors.
    With `leaf_views`, leaves go to `sink` as views of `data` rather than copies.
    """
    link_hash = _cid_v0_link_hash if internal_cid_v0 else CID.to_bytes
    view = _as_bytes_view(data)
    total = len(view)
    sha256 = hashlib.sha256
    level: list[_Entry] = []
    for start in range(0, max(total, 1), chunk_size):
        chunk = view[start : start + chunk_size]
        cid = CID(CODEC_RAW, sha256(chunk).digest())
        if sink is not None:
            sink.append((cid, chunk if leaf_views else bytes(chunk)))
        level.append(_Entry(cid, len(chunk), len(chunk)))
    while len(level) > 1:
        parents: list[_Entry] = []
        for first in range(0, len(level), max_links):
            children = level[first : first + max_links]
            links = [Link(c.cid, c.tsize) for c in children]
            sizes = [c.content_size for c in children]
            block = _encode_node(links, sizes, link_hash)
            cid = CID(CODEC_DAG_PB, sha256(block).digest())
            if sink is not None:
                sink.append((cid, block))
            parents.append(_Entry(cid, sum(sizes), len(block) + sum(c.tsize for c in children)))
        level = parents
    return level[0].cid


def blob_cid(data: bytes | bytearray | memoryview) -> CID:
    """The CID `ipfs add --cid-version 1` gives `data` (raw leaves, 256 KiB, balanced)."""
    return _build(data, CHUNK_SIZE, MAX_LINKS, None)


def blob_blocks(
    data: bytes | bytearray | memoryview, *, leaf_views: bool = False
) -> tuple[CID, list[tuple[CID, bytes]]]:
    """The root CID and every block of `data`'s DAG (leaves first, root last).

    Identical leaves (e.g. runs of zeros) appear once per occurrence; a block store
    keyed by CID stores them once. Each block is hashed once, here: the CIDs returned are
    those of the bytes returned. With `leaf_views` the leaves are memoryviews of `data`
    (no copy): only for data that does not change while they are used.
    """
    blocks: list[tuple[CID, bytes | memoryview]] = []
    root = _build(data, CHUNK_SIZE, MAX_LINKS, blocks, leaf_views=leaf_views)
    return root, blocks  # type: ignore[return-value]  # views only when asked for


# --- walking a DAG ------------------------------------------------------------------------


def block_links(cid: CID, block: bytes | memoryview, *, verify: bool = True) -> list[CID]:
    """Verify `block` against `cid` and return the CIDs it links to (none for a leaf).

    `verify=False` skips the hash for bytes already checked against `cid`.
    """
    if verify:
        verify_block(cid, block)
    if cid.codec == CODEC_RAW:
        return []
    return [link.cid for link in decode_dag_pb(block).links]


def assemble(
    root: CID,
    get_block: Callable[[CID], bytes],
    max_size_bytes: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    *,
    get_block_verifies: bool = False,
) -> bytes:
    """Walk the DAG under `root`, verify every block and size, and return the blob.

    `get_block(cid)` returns the block's bytes (raise from it if a block is missing).
    Every block must hash to its CID; each child must hold exactly the bytes its parent's
    blocksize says (checked before descending into it) and have the Tsize its link says;
    leaves are non-empty, at most `chunk_size`, and all but the last exactly `chunk_size`
    (the fixed-size chunking every blob CID here uses), which bounds the work by the
    declared size even for a hostile DAG that links one block many times; the DAG is at
    most MAX_DAG_DEPTH deep. With `max_size_bytes`, a root announcing a bigger blob is
    refused before any child is fetched. Any mismatch raises `InvalidBlock`.

    With `get_block_verifies`, `get_block` vouches that every block it returns hashes to
    its CID (a block store that checked it once already): blocks are not hashed again here,
    every other check still runs.
    """
    out = bytearray()
    short_leaf_seen = False
    # An internal node linked again (legal, and the way a hostile DAG multiplies work) is
    # read, hashed and decoded once; every link to it is still checked against it.
    decoded: dict[CID, tuple[DagPbNode, int]] = {}

    def visit(cid: CID, depth: int, expected_size: int | None) -> int:
        """Append the blob under `cid`; return its tsize."""
        nonlocal short_leaf_seen
        if depth > MAX_DAG_DEPTH:
            raise InvalidBlock(f"DAG deeper than {MAX_DAG_DEPTH}")
        known = decoded.get(cid)
        if known is not None:
            node, block_size = known
        else:
            block = get_block(cid)
            if not get_block_verifies:
                verify_block(cid, block)
            elif len(block) > MAX_BLOCK_SIZE:
                raise InvalidBlock(f"block for {cid} is {len(block)} bytes, over {MAX_BLOCK_SIZE}")
            if cid.codec == CODEC_RAW:
                if expected_size is not None and len(block) != expected_size:
                    raise InvalidBlock(
                        f"{cid} holds {len(block)} bytes, parent says {expected_size}"
                    )
                if depth > 0:
                    if short_leaf_seen or not 0 < len(block) <= chunk_size:
                        raise InvalidBlock(
                            f"leaf {cid} of {len(block)} bytes breaks fixed-size chunking"
                        )
                    short_leaf_seen = len(block) < chunk_size
                out.extend(block)
                return len(block)
            node, block_size = decoded[cid] = (decode_dag_pb(block), len(block))
        if expected_size is not None and node.filesize != expected_size:
            raise InvalidBlock(f"{cid} holds {node.filesize} bytes, parent says {expected_size}")
        if depth == 0 and max_size_bytes is not None and node.filesize > max_size_bytes:
            raise InvalidBlock(f"blob of {node.filesize} bytes is over {max_size_bytes}")
        tsize = block_size
        for link, child_size in zip(node.links, node.blocksizes, strict=True):
            child_tsize = visit(link.cid, depth + 1, child_size)
            if child_tsize != link.tsize:
                raise InvalidBlock(f"{link.cid} has Tsize {child_tsize}, parent says {link.tsize}")
            tsize += child_tsize
        return tsize

    visit(root, 0, None)
    if max_size_bytes is not None and len(out) > max_size_bytes:
        raise InvalidBlock(f"blob of {len(out)} bytes is over {max_size_bytes}")
    return bytes(out)


def missing_blocks(
    root: CID,
    has_block: Callable[[CID], bool],
    get_block: Callable[[CID], bytes],
    *,
    get_block_verifies: bool = False,
) -> list[CID]:
    """CIDs still to fetch for `root`, in DAG order, given the blocks already held.

    A fetcher learns a node's children only once it holds the node, so this returns the
    frontier: every absent block whose parent is present (or the root itself), each once.
    Fetch them, call again, until it returns []. Held dag-pb blocks are verified and
    decoded on the way (`InvalidBlock` if one is corrupt; with `get_block_verifies`,
    `get_block` does the hashing, as in `assemble`); held leaves are not read.
    """
    missing: list[CID] = []
    seen: set[CID] = set()  # a DAG may link one block many times: visit it once
    stack: list[tuple[CID, int]] = [(root, 0)]
    while stack:
        cid, depth = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        if not has_block(cid):
            missing.append(cid)
            continue
        if cid.codec == CODEC_RAW:
            continue
        if depth >= MAX_DAG_DEPTH:
            raise InvalidBlock(f"DAG deeper than {MAX_DAG_DEPTH}")
        children = block_links(cid, get_block(cid), verify=not get_block_verifies)
        stack.extend((child, depth + 1) for child in reversed(children))
    return missing

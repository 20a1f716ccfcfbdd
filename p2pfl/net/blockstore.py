"""Filesystem block store: one file per block, named by its CID, verified on the way in.

Layout: `<root>/<shard>/<cid>` where `<cid>` is the base32 CIDv1 text and `<shard>` its
last two characters before the final one (go-ipfs flatfs "next-to-last/2": spreads files
evenly, since the end of a CID is hash bytes). A block is written to a temporary file in the
same directory and renamed into place, so a reader (or a restart after `kill -9`) sees either
the whole block or no block — never a torn one. Temporary files left by a killed process are
removed on open.

File I/O is synchronous: blocks are at most 2 MiB (256 KiB for leaves) and land in the page
cache. A caller that stores many blocks (the block fetcher) calls `put_parts` from a worker
thread, where the hash and the file calls release the GIL; `put_parts` takes a block as the
pieces it arrived in, so it is hashed and written without being joined first.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from p2pfl.core.cid import CID, MAX_BLOCK_SIZE, assemble, blob_blocks, missing_blocks, verify_block
from p2pfl.errors import InvalidBlock, InvalidMessage, P2PFLError

_TMP_SUFFIX = ".tmp"
# Temporary names must be unique across the threads of one process as well as across
# processes: pid + a process-wide counter (next() on a count is atomic under the GIL).
_tmp_counter = itertools.count()
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)

# writev takes at most this many pieces (POSIX minimum 16; Linux 1024).
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16

Buffer = bytes | bytearray | memoryview


class BlockNotFound(P2PFLError):
    """The store has no block for this CID."""


class BlockStore:
    """Content-addressed blocks under one directory; safe against kills mid-write."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False) -> None:
        """Open (creating if needed) a store at `root`.

        `fsync=True` also survives power loss at the cost of one disk flush per block; a
        killed process never loses a renamed block either way.
        """
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_text = str(self.root)
        self.fsync = fsync
        # Shard directories known to exist: saves a mkdir (and its EEXIST) per block.
        self._shards: set[str] = set()
        self._clean_temporaries()

    def _clean_temporaries(self) -> None:
        for shard in self.root.iterdir():
            if shard.is_dir():
                for path in shard.iterdir():
                    if path.name.endswith(_TMP_SUFFIX):
                        path.unlink(missing_ok=True)

    def path_of(self, cid: CID) -> Path:
        """Where the block for `cid` lives (whether or not it exists)."""
        return Path(self._file_of(cid))

    def _file_of(self, cid: CID) -> str:
        # Plain strings: this runs a few times per block, and pathlib costs ~10x os.path here.
        text = str(cid)
        return f"{self._root_text}/{text[-3:-1]}/{text}"

    def has(self, cid: CID) -> bool:
        """Whether the block is stored."""
        return os.path.isfile(self._file_of(cid))

    def put(self, cid: CID, block: Buffer) -> bool:
        """Verify `block` against `cid` and store it; False if it was already there.

        Raises `InvalidBlock` (nothing written) if the bytes do not hash to the CID.
        """
        return self.put_parts(cid, (block,))

    def put_parts(self, cid: CID, parts: Sequence[Buffer]) -> bool:
        """`put` for a block given as consecutive pieces (e.g. as read off a stream).

        The pieces are hashed one after another and written with one `writev`, so the block is
        never copied into one buffer. Verified before anything is written, as `put`.
        """
        size = sum(len(part) for part in parts)
        if size > MAX_BLOCK_SIZE:
            raise InvalidBlock(f"block for {cid} is {size} bytes, over {MAX_BLOCK_SIZE}")
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part)  # releases the GIL for pieces over 2 KiB
        if digest.digest() != cid.digest:
            raise InvalidBlock(f"block does not hash to {cid}")
        path = self._file_of(cid)
        if os.path.isfile(path):
            return False
        tmp = f"{path}.{os.getpid()}.{next(_tmp_counter)}{_TMP_SUFFIX}"
        shard = os.path.dirname(path)
        if shard not in self._shards:
            os.makedirs(shard, exist_ok=True)
            self._shards.add(shard)
        try:
            fd = os.open(tmp, _OPEN_FLAGS, 0o644)
        except FileNotFoundError:  # the shard was removed behind our back
            os.makedirs(shard, exist_ok=True)
            fd = os.open(tmp, _OPEN_FLAGS, 0o644)
        try:
            _write_all(fd, parts, size)
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)
        return True

    def get(self, cid: CID, *, verify: bool = True) -> bytes:
        """The block's bytes; `BlockNotFound` if absent.

        With `verify` (default) a block corrupted on disk is deleted and reported as
        `InvalidBlock`, so the next fetch replaces it.
        """
        path = self._file_of(cid)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise BlockNotFound(f"no block {cid} in {self.root}") from None
        try:
            # One read of the file's size: `read(MAX_BLOCK_SIZE + 1)` allocates 2 MiB per
            # call and shrinks it, which cost a block server ~4x the read itself.
            size = os.fstat(fd).st_size
            block = os.read(fd, size) if size <= MAX_BLOCK_SIZE else b""
        finally:
            os.close(fd)
        if size > MAX_BLOCK_SIZE or len(block) != size:
            self.delete(cid)  # no valid block is that large; a short read means a torn file
            raise InvalidBlock(f"stored block {cid} is {size} bytes (over {MAX_BLOCK_SIZE} or truncated)")
        if verify:
            try:
                verify_block(cid, block)
            except InvalidBlock:
                self.delete(cid)
                raise
        return block

    def delete(self, cid: CID) -> None:
        """Remove a block if present."""
        try:
            os.unlink(self._file_of(cid))
        except FileNotFoundError:
            pass

    def __iter__(self) -> Iterator[CID]:
        for shard in sorted(self.root.iterdir()):
            if not shard.is_dir():
                continue
            for path in sorted(shard.iterdir()):
                if path.name.endswith(_TMP_SUFFIX):
                    continue
                try:
                    yield CID.parse(path.name)
                except InvalidMessage:
                    continue

    # --- blobs ------------------------------------------------------------------------------

    def put_blob(self, data: bytes | bytearray | memoryview) -> CID:
        """Chunk `data` into its IPFS-compatible DAG, store every block, return the root."""
        root, blocks = blob_blocks(data)
        for cid, block in blocks:
            if not self.has(cid):
                self.put(cid, block)
        return root

    def missing(self, root: CID) -> list[CID]:
        """The next blocks to fetch for `root` (the frontier); [] when the blob is complete."""
        return missing_blocks(root, self.has, self._get_for_walk)

    def has_blob(self, root: CID) -> bool:
        """Whether every block of the blob under `root` is stored."""
        return not self.missing(root)

    def read_blob(self, root: CID, max_size_bytes: int | None = None) -> bytes:
        """Assemble the blob under `root` from stored blocks, verifying every one.

        `BlockNotFound` if a block is missing, `InvalidBlock` if the DAG is malformed.
        """
        return assemble(root, self.get, max_size_bytes)

    def _get_for_walk(self, cid: CID) -> bytes:
        return self.get(cid)


def _write_all(fd: int, parts: Sequence[Buffer], size: int) -> None:
    """Write `parts` (`size` bytes in all) to `fd`, however short the writes."""
    if len(parts) > _IOV_MAX:
        parts = [b"".join(parts)]
    written = os.writev(fd, parts)
    if written == size:
        return
    rest = memoryview(b"".join(parts))[written:]  # a short write to a regular file: rare
    while rest:
        rest = rest[os.write(fd, rest) :]

"""Filesystem block store: one file per block, named by its CID, verified on the way in.

Layout: `<root>/<shard>/<cid>` where `<cid>` is the base32 CIDv1 text and `<shard>` its
last two characters before the final one (go-ipfs flatfs "next-to-last/2": spreads files
evenly, since the end of a CID is hash bytes). A block is written to a temporary file in the
same directory and renamed into place, so a reader (or a restart after `kill -9`) sees either
the whole block or no block — never a torn one. Temporary files left by a killed process are
removed on open.

File I/O is synchronous: blocks are at most 2 MiB (256 KiB for leaves) and land in the page
cache, which costs less than handing each one to a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from p2pfl.core.cid import CID, MAX_BLOCK_SIZE, assemble, blob_blocks, missing_blocks, verify_block
from p2pfl.errors import InvalidBlock, InvalidMessage, P2PFLError

_TMP_SUFFIX = ".tmp"


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
        self.fsync = fsync
        self._clean_temporaries()

    def _clean_temporaries(self) -> None:
        for shard in self.root.iterdir():
            if shard.is_dir():
                for path in shard.iterdir():
                    if path.name.endswith(_TMP_SUFFIX):
                        path.unlink(missing_ok=True)

    def path_of(self, cid: CID) -> Path:
        """Where the block for `cid` lives (whether or not it exists)."""
        text = str(cid)
        return self.root / text[-3:-1] / text

    def has(self, cid: CID) -> bool:
        """Whether the block is stored."""
        return self.path_of(cid).is_file()

    def put(self, cid: CID, block: bytes | memoryview) -> bool:
        """Verify `block` against `cid` and store it; False if it was already there.

        Raises `InvalidBlock` (nothing written) if the bytes do not hash to the CID.
        """
        verify_block(cid, block)
        path = self.path_of(cid)
        if path.is_file():
            return False
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{id(block):x}{_TMP_SUFFIX}")
        with open(tmp, "wb") as f:
            f.write(block)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        return True

    def get(self, cid: CID, *, verify: bool = True) -> bytes:
        """The block's bytes; `BlockNotFound` if absent.

        With `verify` (default) a block corrupted on disk is deleted and reported as
        `InvalidBlock`, so the next fetch replaces it.
        """
        path = self.path_of(cid)
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
        self.path_of(cid).unlink(missing_ok=True)

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

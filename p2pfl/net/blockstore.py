"""Filesystem block store: blocks appended to pack files, indexed in memory, each hashed once.

Layout (protocol/spec/network.md §5): `<root>/packs/<name>.pack`, each a run of records
`[varint len(cid)][binary cid][varint len(data)][data]`. Storing a block is one `pwritev` at
the end of a pack, not a file created and renamed per block (on ext4 that was ~60% of the time
a fetcher spent storing). The index CID -> (pack, offset, length) lives in memory and is rebuilt
at open by walking the records' headers.

One writer per pack: a process appends only to a pack it holds an exclusive `flock` on, under a
thread lock, so threads of one process may share it and other processes never append to it.
A kill can leave only a torn last record in a pack; whoever next opens the store and can lock
that pack truncates the tail away (counted in `recovery`). A pack locked by a live process is
read up to its last whole record and truncated by nobody. A header no writer wrote (bit rot, a
power cut without fsync) ends the scan of that pack without truncating anything.

Hash once. A stored block is hashed once per process, where its bytes first meet us:

- a block arriving from the network is hashed against its CID before anything is written
  (`put` / `put_parts`: verify-before-store, a requirement);
- a blob stored from local bytes (`put_blob`) is hashed once to name its blocks (the CIDs are
  computed from the very bytes written, so they cannot disagree); `put_dag` takes blocks whose
  CIDs the caller computed from those bytes (`blob_blocks`) and hashes nothing;
- a record found in a pack at open (or by `refresh`) was written by some earlier or other
  process: it is hashed on its first verified `get`.

The index remembers which records this process has hashed (`_Where.verified`) and a verified
`get` of such a record reads it without hashing again; `read_blob` and `missing` tell the DAG
walker so, and it runs every structural check but no hash. Why a verified-looking record still
never yields bytes that do not match its CID: a record is marked verified only when this process
either appended it itself from bytes it had just hashed (under the pack's exclusive `flock`, so
no other process appends to or truncates that pack, and the record lies before the pack's end,
which a torn-tail cut never reaches), or read it back and hashed it; packs are append-only, so
nothing rewrites a whole record afterwards, and a read shorter than the record is refused. What
this trusts is the kernel and disk to return what was written (or last hashed) within one
process's lifetime; a bit flipped on disk since then is caught at the next open, where every
record is unverified again. A record that fails its hash is dropped from the index (the next
fetch appends a good copy, or a spare copy already in a pack takes its place), so a corrupt pack
never serves a wrong block to a verifying reader. The server's `get(verify=False)` reads
unhashed bytes on purpose: the fetcher verifies every block it receives.

Durability is what the one-file-per-block store gave: a stored block survives the process
being killed (it is in the page cache once `put` returns); `fsync=True` also survives power
loss, at one `fdatasync` per block.

Blocks in the older layout, one file per block at `<root>/<shard>/<cid>`, are still read
(`has`, `get`, iteration) and hashed on every verified read (they are rare and may be replaced
behind our back); new blocks always go to packs.

The index is a snapshot of this process's view: another live process appending to a pack of the
same store becomes visible on `refresh()`, which `missing`, `has_blob`, `read_blob`, iteration
and a `get` that misses call; a bare `has` does not (it is the fetcher's hot path).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from p2pfl.core.cid import (
    CID,
    MAX_BLOCK_SIZE,
    assemble,
    blob_blocks,
    encode_varint,
    missing_blocks,
    verify_block,
)
from p2pfl.errors import InvalidBlock, InvalidMessage, P2PFLError

log = logging.getLogger(__name__)

PACKS_DIR = "packs"
PACK_SUFFIX = ".pack"
# A record that would take a pack past this size starts a new one: large enough that a model
# fills few packs, small enough that a pack is a reasonable unit to copy or (later) compact.
PACK_ROTATE_BYTES = 256 * 1024 * 1024
# A record header is at most 1 + 36 + 3 bytes (a 36-byte CID, a length up to 2 MiB); reading a
# little more covers any header a valid record can have in one pread.
_HEADER_READ = 64
_CID_MAX_BYTES = 64

_LEGACY_TMP_SUFFIX = ".tmp"
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)

# writev takes at most this many pieces (POSIX minimum 16; Linux 1024).
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16

Buffer = bytes | bytearray | memoryview


class BlockNotFound(P2PFLError):
    """The store has no block for this CID."""


class _Where(NamedTuple):
    pack: str  # pack file name
    offset: int  # of the block's data in the pack
    length: int
    verified: bool = False  # this process hashed these bytes (written or read): not again


@dataclass
class Recovery:
    """What opening the store found wrong in packs left by a killed (or broken) writer."""

    truncated_packs: int = 0
    truncated_bytes: int = 0
    damaged_packs: int = 0  # packs with a record header no writer wrote (read up to it only)
    corrupt_records: int = 0  # records that did not hash to their CID on read (dropped)


@dataclass
class _Pack:
    name: str
    fd: int  # O_RDWR when we own it, else O_RDONLY
    owned: bool  # we hold its flock and may append / truncate
    scanned: int  # bytes indexed so far (its size, for an owned pack)
    damaged: bool = False  # holds a header no writer wrote: not scanned past, not appended to


class BlockStore:
    """Content-addressed blocks under one directory; safe against kills mid-write."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fsync: bool = False,
        rotate_bytes: int = PACK_ROTATE_BYTES,
    ) -> None:
        """Open (creating if needed) a store at `root` and index its packs.

        `fsync=True` also survives power loss at the cost of one disk flush per block; a
        killed process never loses a stored block either way. `rotate_bytes` bounds a pack's
        size (tests use small ones).
        """
        self.root = Path(root)
        self.packs_dir = self.root / PACKS_DIR
        self.packs_dir.mkdir(parents=True, exist_ok=True)
        self._root_text = str(self.root)
        self._packs_text = str(self.packs_dir)
        self.fsync = fsync
        self.rotate_bytes = rotate_bytes
        self.recovery = Recovery()
        self._lock = threading.Lock()
        self._packs: dict[str, _Pack] = {}
        self._index: dict[CID, _Where] = {}
        # Other copies of a CID found in packs (a duplicate from another process, or a good copy
        # appended after a corrupt one): tried when the indexed copy fails to verify.
        self._spares: dict[CID, list[_Where]] = {}
        self._active: _Pack | None = None
        self._legacy = self._clean_legacy_temporaries()
        self.refresh()

    def close(self) -> None:
        """Close the pack files (releasing our pack locks). The store is unusable after."""
        with self._lock:
            for pack in self._packs.values():
                os.close(pack.fd)
            self._packs.clear()
            self._active = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # --- packs ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Index records other processes appended (new packs, grown packs) since the last look."""
        with self._lock:
            for entry in sorted(os.listdir(self._packs_text)):
                if not entry.endswith(PACK_SUFFIX):
                    continue
                pack = self._packs.get(entry)
                if pack is None:
                    pack = self._open_pack(entry)
                    if pack is None:
                        continue
                elif pack.owned:
                    continue  # everything in a pack we own was indexed as we wrote it
                self._scan(pack)

    def _open_pack(self, name: str) -> _Pack | None:
        path = f"{self._packs_text}/{name}"
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        except PermissionError:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            pack = _Pack(name, fd, owned=False, scanned=0)
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                pack = _Pack(name, fd, owned=False, scanned=0)  # a live process writes it
            else:
                pack = _Pack(name, fd, owned=True, scanned=0)
        self._packs[name] = pack
        return pack

    def _scan(self, pack: _Pack) -> None:
        """Index whole records of `pack` from `pack.scanned` on.

        A torn last record (a killed writer's) is truncated away if we own the pack. A header
        no writer wrote (bit rot, a crash without fsync) stops the scan for good: the records
        before it are served, the bytes after it are left alone (never truncated: they may
        hold whole blocks) and the pack takes no more appends.
        """
        if pack.damaged:
            return
        size = os.fstat(pack.fd).st_size
        pos = pack.scanned
        torn = False
        while pos < size:
            parsed = _parse_header(os.pread(pack.fd, _HEADER_READ, pos))
            if parsed == _SHORT:
                torn = True
                break
            if isinstance(parsed, str):
                pack.damaged = True
                self.recovery.damaged_packs += 1
                log.warning(
                    "block pack %s: no valid record at offset %d of %d; records after it "
                    "are not indexed and the pack takes no more appends",
                    pack.name,
                    pos,
                    size,
                )
                break
            cid, header_len, length = parsed
            if pos + header_len + length > size:
                torn = True  # (or, in a live writer's pack, still being written)
                break
            self._add(cid, _Where(pack.name, pos + header_len, length))
            pos += header_len + length
        pack.scanned = pos
        if torn and pack.owned:
            # Only a killed writer leaves a partial record: cut it so appends follow whole ones.
            os.ftruncate(pack.fd, pos)
            self.recovery.truncated_packs += 1
            self.recovery.truncated_bytes += size - pos
            log.warning(
                "block pack %s: cut %d bytes of a torn last record (a killed writer)",
                pack.name,
                size - pos,
            )
        if pack.owned and not pack.damaged and self._active is None and pos < self.rotate_bytes:
            self._active = pack  # reuse the room left in a pack nobody is writing
        elif pack.owned and pack is not self._active:
            fcntl.flock(pack.fd, fcntl.LOCK_UN)  # read-only for us; another process may append
            pack.owned = False

    def _add(self, cid: CID, where: _Where) -> None:
        if cid in self._index:
            self._spares.setdefault(cid, []).append(where)
        else:
            self._index[cid] = where

    def _new_pack(self) -> _Pack:
        if self._active is not None:
            fcntl.flock(self._active.fd, fcntl.LOCK_UN)
            self._active.owned = False
        while True:
            name = f"{time.time_ns():020d}-{os.getpid()}{PACK_SUFFIX}"
            try:
                fd = os.open(f"{self._packs_text}/{name}", _OPEN_FLAGS, 0o644)
            except FileExistsError:
                continue
            break
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new and unknown to others: never blocks
        if self.fsync:
            _fsync_dir(self._packs_text)
        pack = _Pack(name, fd, owned=True, scanned=0)
        self._packs[name] = pack
        self._active = pack
        return pack

    def _append(self, cid: CID, parts: Sequence[Buffer], size: int) -> bool:
        """Append one record under the lock; False if the CID got indexed meanwhile.

        Only for bytes already known to hash to `cid`: the record is indexed as verified.
        """
        header = _header(cid, size)
        with self._lock:
            if cid in self._index:
                return False
            pack = self._active
            record_size = len(header) + size
            if pack is None or (pack.scanned and pack.scanned + record_size > self.rotate_bytes):
                pack = self._new_pack()
            start = pack.scanned
            try:
                _pwrite_all(pack.fd, [header, *parts], record_size, start)
                if self.fsync:
                    os.fdatasync(pack.fd)
            except BaseException:
                os.ftruncate(pack.fd, start)  # never leave a torn record before later ones
                raise
            pack.scanned = start + record_size
            self._index[cid] = _Where(pack.name, start + len(header), size, verified=True)
        return True

    # --- the legacy layout ------------------------------------------------------------------

    def _clean_legacy_temporaries(self) -> bool:
        """Remove temporaries of the one-file-per-block layout; whether that layout is present."""
        found = False
        for shard in self.root.iterdir():
            if shard.is_dir() and shard.name != PACKS_DIR:
                found = True
                for path in shard.iterdir():
                    if path.name.endswith(_LEGACY_TMP_SUFFIX):
                        path.unlink(missing_ok=True)
        return found

    def path_of(self, cid: CID) -> Path:
        """Where the block for `cid` lives in the old one-file-per-block layout."""
        return Path(self._file_of(cid))

    def _file_of(self, cid: CID) -> str:
        text = str(cid)
        return f"{self._root_text}/{text[-3:-1]}/{text}"

    def _legacy_get(self, cid: CID, verify: bool) -> bytes:
        path = self._file_of(cid)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise BlockNotFound(f"no block {cid} in {self.root}") from None
        try:
            size = os.fstat(fd).st_size
            block = os.read(fd, size) if size <= MAX_BLOCK_SIZE else b""
        finally:
            os.close(fd)
        if size > MAX_BLOCK_SIZE or len(block) != size:
            os.unlink(path)  # no valid block is that large; a short read means a torn file
            raise InvalidBlock(
                f"stored block {cid} is {size} bytes (over {MAX_BLOCK_SIZE} or truncated)"
            )
        if verify:
            try:
                verify_block(cid, block)
            except InvalidBlock:
                os.unlink(path)
                raise
        return block

    # --- blocks -----------------------------------------------------------------------------

    def has(self, cid: CID) -> bool:
        """Whether the block is stored."""
        return cid in self._index or (self._legacy and os.path.isfile(self._file_of(cid)))

    def put(self, cid: CID, block: Buffer) -> bool:
        """Verify `block` against `cid` and store it; False if it was already there.

        Raises `InvalidBlock` (nothing written) if the bytes do not hash to the CID.
        """
        return self.put_parts(cid, (block,))

    def put_parts(self, cid: CID, parts: Sequence[Buffer]) -> bool:
        """`put` for a block given as consecutive pieces (e.g. as read off a stream).

        The pieces are hashed one after another (outside the store's lock, so threads hash in
        parallel) and appended with one `pwritev`, so the block is never copied into one
        buffer. Verified before anything is written, as `put`; this is the block's one hash
        in this process (reading it back does not hash it again).
        """
        size = sum(len(part) for part in parts)
        if size > MAX_BLOCK_SIZE:
            raise InvalidBlock(f"block for {cid} is {size} bytes, over {MAX_BLOCK_SIZE}")
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part)  # releases the GIL for pieces over 2 KiB
        if digest.digest() != cid.digest:
            raise InvalidBlock(f"block does not hash to {cid}")
        return self._put_hashed(cid, parts, size)

    def _put_hashed(self, cid: CID, parts: Sequence[Buffer], size: int) -> bool:
        """Store a block whose bytes this process has just hashed to `cid`."""
        if self.has(cid):
            return False
        return self._append(cid, parts, size)

    def get(self, cid: CID, *, verify: bool = True) -> bytes:
        """The block's bytes; `BlockNotFound` if absent.

        With `verify` (default) the bytes are guaranteed to hash to `cid`: a record this
        process has not hashed yet is hashed now (once; see the module docstring), and one
        corrupted on disk is dropped and reported as `InvalidBlock`, so the next fetch
        replaces it. `verify=False` (the server's path) never hashes.
        """
        where = self._index.get(cid)
        if where is None:
            if self._legacy:
                try:
                    return self._legacy_get(cid, verify)
                except BlockNotFound:
                    pass
            self.refresh()
            where = self._index.get(cid)
            if where is None:
                raise BlockNotFound(f"no block {cid} in {self.root}")
        while True:
            block = os.pread(self._packs[where.pack].fd, where.length, where.offset)
            try:
                if len(block) != where.length:
                    raise InvalidBlock(f"stored block {cid} is truncated")
                if verify and not where.verified:
                    verify_block(cid, block)
                    self._mark_verified(cid, where)
                return block
            except InvalidBlock:
                log.warning(
                    "block pack %s: record for %s at %d is corrupt; dropped",
                    where.pack,
                    cid,
                    where.offset,
                )
                with self._lock:
                    self.recovery.corrupt_records += 1
                    spares = self._spares.get(cid)
                    if self._index.get(cid) == where:
                        if spares:
                            self._index[cid] = spares.pop()
                        else:
                            self._index.pop(cid, None)
                    nxt = self._index.get(cid)
                if nxt is None or nxt == where:
                    raise
                where = nxt

    def _mark_verified(self, cid: CID, where: _Where) -> None:
        with self._lock:
            if self._index.get(cid) == where:  # not dropped or replaced meanwhile
                self._index[cid] = where._replace(verified=True)

    def delete(self, cid: CID) -> None:
        """Forget a block if present.

        A packed block's bytes stay in its pack (packs are append-only) and it is indexed
        again on the next open: a deleted block is only ever a valid block come back.
        """
        with self._lock:
            self._index.pop(cid, None)
            self._spares.pop(cid, None)
        if self._legacy:
            try:
                os.unlink(self._file_of(cid))
            except FileNotFoundError:
                pass

    def __iter__(self) -> Iterator[CID]:
        self.refresh()
        seen = set(self._index)
        yield from sorted(seen, key=str)
        if not self._legacy:
            return
        for shard in sorted(self.root.iterdir()):
            if not shard.is_dir() or shard.name == PACKS_DIR:
                continue
            for path in sorted(shard.iterdir()):
                if path.name.endswith(_LEGACY_TMP_SUFFIX):
                    continue
                try:
                    cid = CID.parse(path.name)
                except InvalidMessage:
                    continue
                if cid not in seen:
                    yield cid

    # --- blobs ------------------------------------------------------------------------------

    def put_blob(self, data: Buffer, cid: CID | None = None) -> CID:
        """Chunk `data` into its IPFS-compatible DAG, store every block, return the root.

        Each block is hashed once, to name it (never again to verify it: its CID comes from
        the bytes written). `data` must not change during the call. With `cid`, the blob must
        have that root: `InvalidBlock` otherwise, before anything is written. That check is
        free (the root is computed anyway), so `put_blob(data, cid)` both verifies bytes that
        claim a CID (e.g. inline in a message) and stores them, with one hash per block; a
        caller that already ran `blob_cid(data)` has hashed them once more. To store a blob
        hashing nothing here, build its DAG once with `blob_blocks` and use `put_dag`.
        """
        root, blocks = blob_blocks(data, leaf_views=True)
        if cid is not None and cid != root:
            raise InvalidBlock(f"blob's root is {root}, not the {cid} it should be")
        self._put_dag_blocks(blocks)
        return root

    def put_dag(self, root: CID, blocks: Sequence[tuple[CID, Buffer]]) -> CID:
        """Store a DAG the caller built from its own bytes with `blob_blocks`; hash nothing.

        For trusted local callers only (the node storing a model or delta it has just
        encoded and named): the caller vouches that every block hashes to its CID, and the
        store serves them as verified. `blocks` is `blob_blocks`' list, root last (checked,
        as are block sizes: the cheap checks). A wrong CID here is a bug that would make
        peers reject what we serve, so tests pin that `blob_blocks` and `blob_cid` agree.
        Returns `root`.
        """
        if not blocks or blocks[-1][0] != root:
            raise ValueError(f"blocks do not end with their root {root} (use blob_blocks)")
        self._put_dag_blocks(blocks)
        return root

    def _put_dag_blocks(self, blocks: Iterable[tuple[CID, Buffer]]) -> None:
        for cid, block in blocks:
            size = len(block)
            if size > MAX_BLOCK_SIZE:
                raise InvalidBlock(f"block for {cid} is {size} bytes, over {MAX_BLOCK_SIZE}")
            self._put_hashed(cid, (block,), size)

    def missing(self, root: CID) -> list[CID]:
        """The next blocks to fetch for `root` (the frontier); [] when the blob is complete."""
        self.refresh()
        return missing_blocks(root, self.has, self.get, get_block_verifies=True)

    def has_blob(self, root: CID) -> bool:
        """Whether every block of the blob under `root` is stored."""
        return not self.missing(root)

    def read_blob(self, root: CID, max_size_bytes: int | None = None) -> bytes:
        """Assemble the blob under `root` from stored blocks, verifying every one.

        Every block read matches its CID (`get` hashes those this process has not hashed
        yet, once); the DAG's structure is checked on every read. `BlockNotFound` if a block
        is missing, `InvalidBlock` if the DAG is malformed or a block corrupt.
        """
        self.refresh()
        return assemble(root, self.get, max_size_bytes, get_block_verifies=True)


# --- records ----------------------------------------------------------------------------------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int] | str:
    """A varint of at most 4 bytes (enough for 2 MiB) at buf[pos:], or _SHORT / _BAD."""
    value = 0
    for i in range(4):
        if pos + i >= len(buf):
            return _SHORT
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    return _BAD


def _header(cid: CID, size: int) -> bytes:
    raw = cid.to_bytes()
    return encode_varint(len(raw)) + raw + encode_varint(size)


# Why a record header could not be read: it ends at the end of the pack (the start of a record
# whose writer was killed, or is still writing), or it is no header a writer ever wrote.
_SHORT = "short"
_BAD = "bad"


def _parse_header(head: bytes) -> tuple[CID, int, int] | str:
    """(cid, header length, data length) of the record starting `head`, or _SHORT / _BAD.

    `head` is what a read from the record's start returned: shorter than a header only at the
    pack's end. Every prefix of a valid header is _SHORT, never _BAD.
    """
    got = _read_varint(head, 0)
    if isinstance(got, str):
        return got
    cid_len, pos = got
    if cid_len == 0 or cid_len > _CID_MAX_BYTES:
        return _BAD
    if pos + cid_len > len(head):
        return _SHORT
    try:
        cid = CID.parse(head[pos : pos + cid_len])
    except InvalidMessage:
        return _BAD
    pos += cid_len
    got = _read_varint(head, pos)
    if isinstance(got, str):
        return got
    length, pos = got
    if length > MAX_BLOCK_SIZE:
        return _BAD
    return cid, pos, length


def _pwrite_all(fd: int, parts: Sequence[Buffer], size: int, offset: int) -> None:
    """Write `parts` (`size` bytes in all) to `fd` at `offset`, however short the writes."""
    if len(parts) > _IOV_MAX:
        parts = [b"".join(parts)]
    written = os.pwritev(fd, parts, offset)
    if written == size:
        return
    rest = memoryview(b"".join(parts))[written:]  # a short write to a regular file: rare
    while rest:
        n = os.pwrite(fd, rest, offset + written)
        written += n
        rest = rest[n:]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""The block store: pack files, their index, recovery after a kill, and the old layout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from p2pfl.core.cid import CHUNK_SIZE, MAX_BLOCK_SIZE, blob_blocks, raw_cid
from p2pfl.errors import InvalidBlock
from p2pfl.net.blockstore import PACKS_DIR, BlockNotFound, BlockStore
from tests.net.conftest import HashCount

HEADER_BYTES = 1 + 36 + 3  # varint(36), binary CID, varint of a length in [16 KiB, 2 MiB)


def _block(i: int, size: int = 20_000) -> bytes:
    return (i.to_bytes(4, "big") * (size // 4 + 1))[:size]


def _packs(root: Path) -> list[Path]:
    return sorted((root / PACKS_DIR).glob("*.pack"))


def test_blocks_go_to_one_pack_and_the_index_is_rebuilt_on_reopen(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    blocks = {raw_cid(_block(i)): _block(i) for i in range(10)}
    for cid, block in blocks.items():
        assert store.put(cid, block) is True
    assert store.put(next(iter(blocks)), _block(0)) is False
    (pack,) = _packs(tmp_path)
    assert pack.stat().st_size == 10 * (HEADER_BYTES + 20_000)
    store.close()
    again = BlockStore(tmp_path)
    assert sorted(again, key=str) == sorted(blocks, key=str)
    assert all(again.get(cid) == block for cid, block in blocks.items())
    assert again.recovery.truncated_bytes == 0
    # Appends continue in the same pack (it had room) rather than one pack per open.
    again.put(raw_cid(b"more"), b"more")
    assert _packs(tmp_path) == [pack]


def test_a_torn_tail_left_by_a_kill_is_truncated_and_counted(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    kept = raw_cid(_block(1))
    store.put(kept, _block(1))
    store.close()
    (pack,) = _packs(tmp_path)
    whole = pack.stat().st_size
    torn = _block(2)
    header = bytes([36]) + raw_cid(torn).to_bytes() + bytes([0xA0, 0x9C, 0x01])  # 20,000
    with pack.open("ab") as f:
        f.write(header + torn[:7000])  # the writer died mid-record
    again = BlockStore(tmp_path)
    assert again.recovery.truncated_packs == 1
    assert again.recovery.truncated_bytes == len(header) + 7000
    assert pack.stat().st_size == whole
    assert again.get(kept) == _block(1)
    assert not again.has(raw_cid(torn))
    # The next record follows whole ones and survives another reopen.
    again.put(raw_cid(torn), torn)
    again.close()
    third = BlockStore(tmp_path)
    assert third.get(raw_cid(torn)) == torn and third.recovery.truncated_bytes == 0


def test_a_header_no_writer_wrote_ends_the_scan_without_truncating(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    store.put(raw_cid(b"a"), b"a")
    store.put(raw_cid(b"b"), b"b")
    store.close()
    (pack,) = _packs(tmp_path)
    data = bytearray(pack.read_bytes())
    first = 1 + 36 + 1 + 1
    data[first] = 0  # the second record's CID length: no writer writes 0
    pack.write_bytes(bytes(data))
    again = BlockStore(tmp_path)
    assert list(again) == [raw_cid(b"a")]
    assert again.recovery.damaged_packs == 1 and again.recovery.truncated_bytes == 0
    assert pack.read_bytes() == bytes(data)  # the bytes after it are kept
    again.put(raw_cid(b"c"), b"c")
    assert len(_packs(tmp_path)) == 2  # appends go to a new pack
    again.close()
    assert set(BlockStore(tmp_path)) == {raw_cid(b"a"), raw_cid(b"c")}


def test_every_prefix_of_a_record_reads_as_torn_never_as_damage(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    store.put(raw_cid(b"kept"), b"kept")
    store.close()
    (pack,) = _packs(tmp_path)
    whole = pack.read_bytes()
    record = bytes([36]) + raw_cid(_block(9)).to_bytes() + bytes([0xA0, 0x9C, 0x01]) + _block(9)
    for cut in [*range(1, 45), 1000, len(record) - 1]:
        pack.write_bytes(whole + record[:cut])
        again = BlockStore(tmp_path)
        assert (again.recovery.truncated_bytes, again.recovery.damaged_packs) == (cut, 0), cut
        assert list(again) == [raw_cid(b"kept")]
        again.close()
        assert pack.read_bytes() == whole


def test_a_store_killed_while_writing_keeps_every_block_it_reported(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    reported = [int(child.stdout.readline()) for _ in range(40)]
    child.send_signal(signal.SIGKILL)  # somewhere in the middle of writing more
    child.wait()
    store = BlockStore(tmp_path)
    for i in reported:
        assert store.get(raw_cid(_block(i, 100_000))) == _block(i, 100_000)
    for cid in store:
        store.get(cid)  # every indexed record is whole and verifies
    assert store.put(raw_cid(b"after"), b"after") and BlockStore(tmp_path).has(raw_cid(b"after"))


_WRITER = """
import sys
from p2pfl.core.cid import raw_cid
from p2pfl.net.blockstore import BlockStore
store = BlockStore(sys.argv[1])
i = 0
while True:
    block = (i.to_bytes(4, "big") * 25001)[:100_000]
    store.put(raw_cid(block), block)
    print(i, flush=True)
    i += 1
"""


def test_a_corrupt_record_is_rejected_dropped_and_replaced_by_a_good_copy(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    good, victim = _block(1), _block(2)
    store.put(raw_cid(good), good)
    store.put(raw_cid(victim), victim)
    store.close()
    (pack,) = _packs(tmp_path)
    data = bytearray(pack.read_bytes())
    data[-100] ^= 0x01  # a flipped bit in the second record's data
    pack.write_bytes(bytes(data))
    store = BlockStore(tmp_path)
    assert store.get(raw_cid(good)) == good
    with pytest.raises(InvalidBlock):
        store.get(raw_cid(victim))
    assert not store.has(raw_cid(victim))  # so the next fetch replaces it
    assert store.recovery.corrupt_records == 1
    assert store.put(raw_cid(victim), victim) is True
    store.close()
    # Both copies are in the pack now; a reader skips the corrupt one for the good one.
    again = BlockStore(tmp_path)
    assert again.get(raw_cid(victim)) == victim
    assert again.recovery.corrupt_records == 1


def test_a_corrupt_record_is_served_only_unverified(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    store.put(raw_cid(_block(3)), _block(3))
    store.close()
    (pack,) = _packs(tmp_path)
    data = bytearray(pack.read_bytes())
    data[HEADER_BYTES] ^= 0xFF
    pack.write_bytes(bytes(data))
    store = BlockStore(tmp_path)
    assert store.get(raw_cid(_block(3)), verify=False) != _block(3)  # the server's fast path
    with pytest.raises(InvalidBlock):
        store.get(raw_cid(_block(3)))
    with pytest.raises(BlockNotFound):
        store.get(raw_cid(_block(3)))


def test_concurrent_appends_from_threads_all_land_whole(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(40):
                n = (t + 1) * 1000 + i  # unique to this thread
                parts = [_block(n, 9000)[:4000], _block(n, 9000)[4000:]]
                store.put_parts(raw_cid(b"".join(parts)), parts)
                store.put(raw_cid(_block(i, 9000)), _block(i, 9000))  # the same blocks race
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store.close()
    again = BlockStore(tmp_path)
    cids = list(again)
    assert len(cids) == 6 * 40 + 40  # each shared block stored once
    assert all(again.get(cid) for cid in cids)
    (pack,) = _packs(tmp_path)
    assert pack.stat().st_size == len(cids) * (1 + 36 + 2 + 9000)


def test_packs_rotate_past_their_size(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, rotate_bytes=50_000)
    for i in range(6):
        store.put(raw_cid(_block(i)), _block(i))
    assert len(_packs(tmp_path)) == 3  # 20 KB records: a third would take a pack past 50 KB
    store.close()
    assert len(list(BlockStore(tmp_path))) == 6


def test_a_pack_being_written_by_a_live_store_is_read_but_never_truncated(tmp_path: Path) -> None:
    writer = BlockStore(tmp_path)  # holds its pack's lock, as another live process would
    writer.put(raw_cid(b"one"), b"one")
    (pack,) = _packs(tmp_path)
    with pack.open("ab") as f:
        f.write(bytes([36]) + raw_cid(b"two").to_bytes())  # a record half written right now
    reader = BlockStore(tmp_path)
    assert list(reader) == [raw_cid(b"one")]
    assert reader.recovery.truncated_bytes == 0 and pack.stat().st_size > 40
    # The reader writes to a pack of its own, and sees the writer's later blocks on refresh.
    reader.put(raw_cid(b"mine"), b"mine")
    assert len(_packs(tmp_path)) == 2
    with pack.open("r+b") as f:
        f.truncate(40 + 3)
    writer.put(raw_cid(b"three"), b"three")
    assert not reader.has(raw_cid(b"three"))
    assert reader.get(raw_cid(b"three")) == b"three"  # a miss refreshes
    assert writer.get(raw_cid(b"mine")) == b"mine"


def test_blobs_roundtrip_through_packs(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    data = os.urandom(5 * CHUNK_SIZE + 99)
    root = store.put_blob(data)
    store.close()
    again = BlockStore(tmp_path)
    assert again.has_blob(root) and again.read_blob(root) == data


# --- the old one-file-per-block layout --------------------------------------------------------


def _legacy_put(root: Path, block: bytes) -> Path:
    cid = raw_cid(block)
    text = str(cid)
    path = root / text[-3:-1] / text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(block)
    return path


def test_blocks_in_the_old_layout_are_still_read(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 5)
    root, blocks = blob_blocks(data)
    for _, block in blocks[:2]:
        _legacy_put(tmp_path, block)
    torn = _legacy_put(tmp_path, b"x").with_name("bafkreixyz.1234.ab.tmp")
    torn.write_bytes(b"partial")
    store = BlockStore(tmp_path)
    assert not torn.exists()  # temporaries of a killed old-layout writer are removed
    for cid, block in blocks[:2]:
        assert store.has(cid) and store.get(cid) == block
    assert store.path_of(blocks[0][0]).is_file()
    for cid, block in blocks[2:]:
        assert store.put(cid, block) is True  # new blocks go to a pack
    assert store.put(blocks[0][0], blocks[0][1]) is False  # already there, in the old layout
    assert store.read_blob(root) == data
    assert set(store) == {cid for cid, _ in blocks} | {raw_cid(b"x")}
    store.delete(blocks[0][0])
    assert not store.has(blocks[0][0]) and not store.path_of(blocks[0][0]).exists()


def test_a_corrupt_or_oversized_old_layout_file_is_deleted(tmp_path: Path) -> None:
    bad = _legacy_put(tmp_path, b"y" * 100)
    bad.write_bytes(b"z" * 100)
    big = _legacy_put(tmp_path, b"w" * 10)
    big.write_bytes(b"w" * (MAX_BLOCK_SIZE + 1))
    store = BlockStore(tmp_path)
    with pytest.raises(InvalidBlock):
        store.get(raw_cid(b"y" * 100))
    with pytest.raises(InvalidBlock):
        store.get(raw_cid(b"w" * 10), verify=False)
    assert not bad.exists() and not big.exists()
    assert not store.has(raw_cid(b"y" * 100)) and not store.has(raw_cid(b"w" * 10))


def test_an_fsync_store_writes_the_same_packs(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, fsync=True)
    data = os.urandom(2 * CHUNK_SIZE)
    root = store.put_blob(data)
    store.close()
    assert BlockStore(tmp_path).read_blob(root) == data


# --- hash once --------------------------------------------------------------------------------


def test_a_stored_block_is_hashed_on_arrival_and_never_again_in_this_process(
    tmp_path: Path, hashed: HashCount
) -> None:
    store = BlockStore(tmp_path)
    block = _block(7)
    cid = raw_cid(block)
    hashed.reset()
    store.put(cid, block)
    assert (hashed.calls, hashed.bytes) == (1, len(block))
    assert store.get(cid) == block and store.get(cid) == block
    assert hashed.calls == 1
    store.close()
    again = BlockStore(tmp_path)  # records found at open are hashed on their first read only
    hashed.reset()
    assert again.get(cid) == block and again.get(cid) == block
    assert (hashed.calls, hashed.bytes) == (1, len(block))
    assert again.get(cid, verify=False) == block and hashed.calls == 1


def test_a_blob_read_back_after_reopen_hashes_each_block_once(
    tmp_path: Path, hashed: HashCount
) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 5)
    root, blocks = blob_blocks(data)
    BlockStore(tmp_path).put_blob(data)
    again = BlockStore(tmp_path)
    hashed.reset()
    assert again.has_blob(root) and again.read_blob(root) == data and again.read_blob(root) == data
    assert (hashed.calls, hashed.bytes) == (len(blocks), len(data) + len(blocks[-1][1]))


def test_put_blob_hashes_each_block_once_and_checks_a_given_root(
    tmp_path: Path, hashed: HashCount
) -> None:
    data = bytearray(os.urandom(2 * CHUNK_SIZE + 1))
    root, blocks = blob_blocks(bytes(data))
    store = BlockStore(tmp_path)
    hashed.reset()
    assert store.put_blob(data, root) == root
    assert (hashed.calls, hashed.bytes) == (len(blocks), sum(len(b) for _, b in blocks))
    assert store.read_blob(root) == data and hashed.calls == len(blocks)
    # A wrong root is refused before anything is written (free: the root is computed anyway).
    other = BlockStore(tmp_path / "other")
    with pytest.raises(InvalidBlock):
        other.put_blob(data, raw_cid(b"not this blob"))
    assert list(other) == []


def test_put_dag_stores_a_dag_built_by_the_caller_without_hashing(
    tmp_path: Path, hashed: HashCount
) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 1)
    root, blocks = blob_blocks(data)
    store = BlockStore(tmp_path)
    hashed.reset()
    assert store.put_dag(root, blocks) == root
    assert store.read_blob(root) == data and store.missing(root) == []
    assert hashed.calls == 0
    with pytest.raises(ValueError):  # not blob_blocks' list (the root comes last)
        store.put_dag(root, blocks[:-1])
    store.close()
    assert BlockStore(tmp_path).read_blob(root) == data  # a fresh process hashes it on read


def test_a_record_that_failed_its_hash_is_not_served_verified_after_a_good_copy_is_stored(
    tmp_path: Path,
) -> None:
    # A corrupt record from disk is dropped on its verified read; the good copy fetched next
    # is what later reads get (marked verified as it is written), never the corrupt bytes.
    store = BlockStore(tmp_path)
    store.put(raw_cid(_block(4)), _block(4))
    store.close()
    (pack,) = _packs(tmp_path)
    data = bytearray(pack.read_bytes())
    data[HEADER_BYTES + 10] ^= 0x01
    pack.write_bytes(bytes(data))
    store = BlockStore(tmp_path)
    assert store.get(raw_cid(_block(4)), verify=False) != _block(4)
    with pytest.raises(InvalidBlock):
        store.get(raw_cid(_block(4)))
    assert store.put(raw_cid(_block(4)), _block(4)) is True
    assert store.get(raw_cid(_block(4))) == _block(4)
    assert store.get(raw_cid(_block(4)), verify=False) == _block(4)

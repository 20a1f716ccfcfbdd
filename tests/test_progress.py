"""Progress lines for long CLI work: shown in a terminal or on request, off with -q; the
node's training reports epochs (at most about one a second, the last always) and a model
fetch reports the bytes received while it runs."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import trio

from p2pfl.cli.progress import progress_printer
from p2pfl.core.cid import blob_cid
from p2pfl.node.models import PROGRESS_EVERY_S, fetch_reporting
from p2pfl.node.workers import epoch_reporter
from p2pfl.train.config import TrainConfig
from p2pfl.train.data import Dataset
from p2pfl.train.models import build_model, model_to_numpy
from p2pfl.train.trainer import train_local


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_in_a_terminal_or_on_request_and_none_when_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("P2PFL_PROGRESS", raising=False)
    tty = Terminal()
    emit = progress_printer(False, tty)
    assert emit is not None
    emit("fetching model x: 1.0 MiB received")
    assert tty.getvalue() == "fetching model x: 1.0 MiB received\n"
    assert progress_printer(True, Terminal()) is None
    assert progress_printer(False, io.StringIO()) is None  # a pipe or a file: quiet
    monkeypatch.setenv("P2PFL_PROGRESS", "1")
    assert progress_printer(False, io.StringIO()) is not None
    assert progress_printer(True, io.StringIO()) is None


def test_epochs_are_reported_about_once_a_second_and_the_last_always() -> None:
    lines: list[str] = []
    now = [0.0]
    on_epoch = epoch_reporter(lines.append, 3, 5, lambda: now[0])
    assert on_epoch is not None and epoch_reporter(None, 3, 5, lambda: 0.0) is None
    for epoch, at in ((1, 0.2), (2, 1.1), (3, 1.5), (4, 1.9), (5, 2.0)):
        now[0] = at
        on_epoch(epoch, 0.5)
    assert lines == [
        "round 3: training epoch 2/5, loss 0.5000",
        "round 3: training epoch 5/5, loss 0.5000",
    ]


def test_train_local_reports_every_epoch() -> None:
    rng = np.random.default_rng(0)
    data = Dataset(rng.random((20, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 20))
    kwargs = {"input_shape": [1, 8, 8], "hidden": [4]}
    base = model_to_numpy(build_model("mlp", **kwargs))
    seen: list[tuple[int, float]] = []
    cfg = TrainConfig.from_dict({"epochs": 3, "batch_size": 8, "lr": 0.05})
    result = train_local(
        "mlp",
        base,
        data,
        cfg,
        1,
        model_kwargs=kwargs,
        on_epoch=lambda e, loss: seen.append((e, loss)),
    )
    assert [e for e, _ in seen] == [1, 2, 3]
    assert seen[-1][1] == result.train_loss


class SlowNet:
    """A fetch that takes 2.7 s and receives 0.5 MiB every 0.45 s (no tie with the
    reporter's ticks)."""

    def __init__(self) -> None:
        self.fetched = 0

    def metrics(self) -> dict[str, Any]:
        return {"bytes-fetched": self.fetched}

    async def fetch_blob(self, root: Any, providers: Any = None) -> None:
        for _ in range(6):
            await trio.sleep(0.45)
            self.fetched += 1 << 19


async def test_a_fetch_reports_while_it_runs_and_when_done(autojump_clock: Any) -> None:
    lines: list[str] = []
    cid = blob_cid(b"model")
    await fetch_reporting(SlowNet(), cid, None, lines.append)  # type: ignore[arg-type]
    assert PROGRESS_EVERY_S == 1.0
    assert lines == [
        f"fetching model {cid}: 1.0 MiB received",
        f"fetching model {cid}: 2.0 MiB received",
        f"fetched model {cid} (3.0 MiB)",
    ]
    net = SlowNet()
    await fetch_reporting(net, cid, None, None)  # type: ignore[arg-type]
    assert net.fetched == 3 << 20  # fetched, silently

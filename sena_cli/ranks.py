"""Several processes of one stage (torchrun, accelerate launch): who does which chunk, and the waits.

`qa`, `pair` and `eval` cut their work into chunks (images, pairs, question batches); each rank
journals the chunks it finishes in its own file of the stage's partial folder (rank{r}.jsonl),
and rank 0 (or every rank, for eval) reads them all. Three rules make several processes as safe
as one:

- The ranks share the project folder. They meet through files, so every machine must see the
  same folder (a shared filesystem). `Ranks.start` checks it before any work: rank 0 writes a
  random token, every rank reads it back, and a rank that cannot stops the run in one line.
- Who did a chunk is not part of the run. Any rank reads every rank's journal, and the chunks
  not finished yet are dealt out afresh at each launch (`mine`), so a killed run resumes with
  any number of processes and an uneven leftover is shared evenly.
- No collective wait spans long work. Collectives happen only at the start (the folder check,
  rank 0's view of what is done, agreeing on a refusal). A rank that needs others' chunks polls
  their journals (`collect`) for as long as they are alive: each rank touches its journal every
  HEARTBEAT_S seconds, and a wait fails only when a rank it waits for has given no sign for
  STALE_AFTER_S seconds (the process died, or lost the folder), never because work is long.
  At the end every rank says it is done with the folder (`finish`); rank 0 waits for that,
  the same way, before it removes the folder.

`Shards` is the loop the three stages share: skip what the journals hold, run this rank's share
of the rest, journal each result, gather all of them in chunk order; `Ranks.publish` then lets
rank 0 write the outputs and remove the folder once every rank is done with it.

`train` has no chunks: its waits are the trainer's collectives, whose timeout it sizes with
`Ranks.start(timeout_s=...)`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import torch

from sena_cli import bounded
from sena_cli.artifacts import JOURNAL_FIX, Journal, atomic_write_text, journal_entries
from sena_cli.errors import SenaError

T = TypeVar("T")
HEARTBEAT_S = 5.0
STALE_AFTER_S = 600.0


def launched_processes() -> int:
    """How many processes torchrun / accelerate launch started for this run (1 without them)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class Ranks:
    """This process's place in a run of one stage, and the meeting point of the ranks: a folder."""

    def __init__(self, folder: Path, rank: int = 0, world: int = 1, device: torch.device | None = None):
        self.folder = Path(folder)
        self.rank, self.world, self.device = rank, world, device
        self.launch = ""  # a random name of this launch, the same on every rank
        self.run_id = ""  # the identity of the work (set by `finished`)
        self._stop: threading.Event | None = None
        self._journals: _JournalReader | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, folder: str | Path, *, timeout_s: float | None = None, heartbeat: bool = True) -> Ranks:
        """Join the other processes (if launched with several) and check that they share `folder`.

        `timeout_s` sets the collectives' timeout (train sizes it to its longest wait); `heartbeat`
        touches this rank's journal while the process lives, for `collect` to see.
        """
        if launched_processes() <= 1:
            return cls(Path(folder))
        from accelerate import PartialState

        kwargs = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
        state = PartialState(cpu=not torch.cuda.is_available(), **kwargs)
        atexit.register(_leave_process_group)
        ranks = cls(Path(folder), state.process_index, state.num_processes, state.device)
        ranks._check_shared_folder()
        if heartbeat:
            ranks._beat()
        return ranks

    # ------------------------------------------------------------ short collectives (before long work)

    def from_main(self, compute: Callable[[], T]) -> T:
        """Rank 0's `compute()`, on every rank; a SenaError there is raised on every rank."""
        if self.world == 1:
            return compute()
        import torch.distributed as dist

        box: list = [None]
        error = None
        if self.is_main:
            try:
                box[0] = ("ok", compute())
            except SenaError as exc:
                error, box[0] = exc, ("error", str(exc))
            except BaseException:
                box[0] = ("error", "rank 0 failed; see its error above")
                dist.broadcast_object_list(box, src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        if box[0][0] == "error":
            raise SenaError(box[0][1])
        return box[0][1]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def _check_shared_folder(self) -> None:
        def write_token() -> str:
            nonce = secrets.token_hex(8)
            atomic_write_text(self.folder / f".launch-{nonce}", nonce)
            return nonce

        nonce = self.launch = self.from_main(write_token)
        token = self.folder / f".launch-{nonce}"
        try:
            seen = bounded.read_text(token, what="launch token") == nonce
        except (OSError, SenaError, UnicodeDecodeError):
            seen = False
        report = self.gather((seen, socket.gethostname(), str(self.folder.resolve())))
        if self.is_main:
            token.unlink(missing_ok=True)
        blind = [(r, host) for r, (ok, host, _) in enumerate(report) if not ok]
        if blind:
            who = ", ".join(f"rank {r} on {host}" for r, host in blind)
            raise SenaError(f"{report[0][2]}: {who} cannot read the file rank 0 wrote there; the processes of one "
                            "run must share the project folder (a filesystem every machine mounts): launch them "
                            "from such a folder")

    # ------------------------------------------------------------ chunks and journals

    def journal_path(self, rank: int | None = None) -> Path:
        return self.folder / f"rank{self.rank if rank is None else rank}.jsonl"

    def finished(self, run_id: str) -> set:
        """The chunks of this run that earlier launches finished, as rank 0 reads them before any
        rank writes; a rank that computed another run identity (other params or inputs) stops."""
        self.run_id = run_id
        run, done = self.from_main(lambda: (run_id, set(self._reader().poll())))
        differ = [r for r, same in enumerate(self.gather(run == run_id)) if not same]
        if differ:
            raise SenaError(f"{self.folder}: rank(s) {differ} see other parameters, inputs or model than rank 0; "
                            "every process must run on the same project folder")
        return done

    def journal(self) -> Journal:
        """This rank's journal of finished chunks (after `finished`)."""
        return Journal(self.journal_path(), self.run_id)

    def mine(self, chunks: Iterable[Hashable], done: set) -> list:
        """This rank's share of the chunks not finished yet: dealt round-robin at each launch."""
        todo = [c for c in chunks if c not in done]
        return todo[self.rank :: self.world]

    def collect(self, chunks: Iterable[Hashable], done: set,
                on_found: Callable[[Hashable], None] = lambda c: None) -> dict:
        """Every chunk's journaled result, waiting for other ranks' chunks while those ranks are alive.

        `on_found(chunk)` is called for each chunk another rank finished during this launch.
        """
        chunks = list(chunks)
        todo = [c for c in chunks if c not in done]
        return self._wait(chunks, {c: i % self.world for i, c in enumerate(todo)}, on_found)

    def forget(self, chunks: Iterable[Hashable]) -> None:
        """Let go of the journaled results of `chunks` (collected already, never asked again): what a
        long run holds does not grow with its chunks. Their journal lines stay for a resume."""
        if self._journals is not None:
            for c in chunks:
                self._journals.found.pop(c, None)

    def finish(self) -> None:
        """This rank is done with the folder. Rank 0 waits for every rank to say so (while they
        are alive) before it may remove the folder; the others leave at once."""
        if self.world > 1:
            said = {f"finished:{self.launch}:{r}": r for r in range(self.world)}
            if self.is_main:
                self._wait(list(said)[1:], said, lambda c: None)
            else:
                Journal(self.journal_path(), self.run_id).add(f"finished:{self.launch}:{self.rank}", None)
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def publish(self, write: Callable[[], T]) -> T | None:
        """After the work: every rank says it is done (`finish`); rank 0 then runs `write` (the stage's
        atomic publishing) and removes the folder, which is kept when `write` fails, for the rerun.
        Returns what `write` returned on rank 0, None on the others."""
        self.finish()
        if not self.is_main:
            return None
        out = write()
        shutil.rmtree(self.folder, ignore_errors=True)
        return out

    def _wait(self, chunks: list, owner: dict, on_found: Callable[[Hashable], None]) -> dict:
        reader = self._reader()
        pending = {c for c in chunks if owner.get(c, self.rank) != self.rank}
        signs: dict[int, tuple[int | None, float]] = {}
        delay = 0.02
        while True:
            found = reader.poll()
            for c in [c for c in pending if c in found]:
                pending.discard(c)
                on_found(c)
            missing = [c for c in chunks if c not in found]
            if not missing:
                return {c: found[c] for c in chunks}
            unowned = [c for c in missing if owner.get(c, self.rank) == self.rank]
            if unowned:
                raise SenaError(f"{self.folder}: chunk {unowned[0]} is missing from the journals; they changed "
                                "during the run: rerun the stage")
            now = time.monotonic()
            for r in sorted({owner[c] for c in missing}):
                sign = _mtime(self.journal_path(r))
                last = signs.get(r)
                if last is None or last[0] != sign:
                    signs[r] = (sign, now)
                elif now - last[1] > STALE_AFTER_S:
                    raise SenaError(f"{self.journal_path(r)}: rank {r} gave no sign for {now - last[1]:.0f} s and "
                                    "has not finished its chunks (it stopped, or lost the shared folder); the "
                                    "finished chunks are kept: rerun the stage to resume")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def _reader(self) -> _JournalReader:
        if self._journals is None or self._journals.run_id != self.run_id:
            self._journals = _JournalReader(self.folder, self.run_id)
        return self._journals

    def _beat(self) -> None:
        """Touch this rank's journal every HEARTBEAT_S seconds while the process lives."""
        path = self.journal_path()
        path.touch()
        stop = self._stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                with contextlib.suppress(OSError):  # never creates the file: rank 0 may have removed the folder
                    os.utime(path)

        threading.Thread(target=beat, daemon=True, name=f"sena-heartbeat-rank{self.rank}").start()


def _leave_process_group() -> None:
    """Tear the process group down before the interpreter does: left to the interpreter's exit, gloo's
    threads are sometimes destroyed still running ("terminate called without an active exception"), and
    a rank that finished its work dies of SIGABRT, which fails the whole launch (about 1 exit in 15 on
    2 busy cores)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):  # at exit, after an error elsewhere: nothing left to save
            dist.destroy_process_group()


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    """`items` cut into consecutive chunks of `size` (the last may be shorter)."""
    return [list(items[s : s + size]) for s in range(0, len(items), size)]


class Shards:
    """One run of a stage's resumable work, shared between the ranks: the chunks the journals hold
    are skipped, the rest dealt out (`Ranks.mine`), each result journaled as soon as it is computed
    (a kill loses one chunk at most), and every result gathered back in chunk order.

    `run_id` is the identity of the work (inputs, tracked params, model): journal lines of another
    run are ignored. The process count is not part of it, so a resume may use any number."""

    def __init__(self, ranks: Ranks, run_id: str):
        self.ranks = ranks
        self.done = ranks.finished(run_id)  # a collective: every rank creates its Shards at the same point
        self.journal = ranks.journal()
        self.run_now = 0  # chunks this rank computed in this launch, over every `run`

    def run(self, items: Sequence, size: int, work: Callable[[list], object], *,
            tick: Callable[[int], None] = lambda n: None,
            name: Callable[[int, list], Hashable] = lambda i, chunk: i, everyone: bool = False) -> list | None:
        """`work(chunk)` of every chunk of `size` items, in chunk order: on rank 0, or on every rank
        with `everyone` (each waits for the others' chunks while they live); None on the others.

        `name(i, chunk)` is chunk i's journal key (its index unless given); `tick(n)` advances the
        progress by a chunk's item count, for chunks found done, computed here or by another rank."""
        chunks = chunked(items, size)
        keys = [name(i, chunk) for i, chunk in enumerate(chunks)]
        chunk_of = dict(zip(keys, chunks, strict=True))
        count = {key: len(chunk) for key, chunk in chunk_of.items()}
        tick(sum(count[key] for key in keys if key in self.done))
        for key in self.ranks.mine(keys, self.done):
            self.journal.add(key, work(chunk_of[key]))
            self.run_now += 1
            tick(count[key])
        if not (everyone or self.ranks.is_main):
            return None
        found = self.collect(keys, on_found=lambda key: tick(count[key]))
        self.ranks.forget(keys)  # the caller holds them now
        return [found[key] for key in keys]

    def collect(self, keys: Iterable[Hashable], on_found: Callable[[Hashable], None] = lambda key: None) -> dict:
        """The journaled results of `keys`, waiting for those another rank is computing now."""
        return self.ranks.collect(keys, self.done, on_found)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class _JournalReader:
    """Every rank's journal of one run, read incrementally: complete lines only, newest entry wins."""

    def __init__(self, folder: Path, run_id: str):
        self.folder, self.run_id = folder, run_id
        self.offsets: dict[Path, int] = {}
        self.found: dict = {}

    def poll(self) -> dict:
        for path in sorted(self.folder.glob("rank*.jsonl")):
            offset = self.offsets.get(path, 0)
            try:
                bounded.regular(path, JOURNAL_FIX)  # a FIFO in its place would block every rank's poll
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1  # a line being written is read on a later poll
            self.offsets[path] = offset + end
            self.found.update(journal_entries(data[:end], self.run_id))
        return self.found

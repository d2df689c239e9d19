"""Write pulsewatch change-feed plugins in Python.

A plugin is a class with ``restore``, ``process``, ``snapshot`` and, if it likes, ``finish`` and
``truncated`` (see :class:`Plugin`); ``Run = pulsewatch.command(MyPlugin)`` in the module that
componentize-py builds makes it a WASI command that the host runs. :func:`run` drives it: it
resumes from the checkpoint in ``/state``, polls batches of events, hands each to ``process``,
commits the cursor with ``snapshot()`` atomically, waits while caught up, and returns after
``finish`` when the host closes the feed: the loop of the Rust SDK (``pulsewatch-guest``), with
the same checkpoint file, byte for byte.

Batches are read with ``poll-packed``: one byte string for the whole batch, in the layout
``wit/feed.wit`` documents, and each :class:`EventRef` reads its fields in place through a
``memoryview``; nothing is copied per event but what a field returns.
"""

import os
import struct
import sys
import time
import uuid

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import feed

__all__ = [
    "Batch",
    "ChangePoller",
    "Checkpoint",
    "Closed",
    "DEFAULT_BATCH_LIMIT",
    "EventRef",
    "KINDS",
    "Plugin",
    "PulsewatchError",
    "STATE_DIR",
    "Truncated",
    "Unavailable",
    "Undecodable",
    "command",
    "run",
]

#: Events asked for in one poll: the seed's ``ChangePoller`` batch limit.
DEFAULT_BATCH_LIMIT = 1000

#: The directory the host preopens for the plugin, private to it.
STATE_DIR = "/state"

#: Where a plugin without a checkpoint starts, as the host says: ``beginning``, ``head``, a seq
#: (start after it) or ``time:<ms>``.
START_VARIABLE = "PULSEWATCH_START"

#: The kinds of change, in the order of the WIT enum (``EventRef.kind_index``).
KINDS = ("created", "updated", "archived", "deleted")

# How long one wait lasts before the loop asks again: the host ends it at once when events
# arrive or the run stops.
_WAIT_MS = 3_600_000
# Tries of an `unavailable` feed or output, with doubling pauses from 100 ms (3 s in all).
_RETRIES = 5


class PulsewatchError(Exception):
    """An error of the SDK's, whose text is a sentence a plugin author can act on."""


class Unavailable(PulsewatchError):
    """The feed could not be read now; nothing was consumed: poll again later."""

    def __init__(self, why):
        super().__init__(
            f"the feed is unavailable: {why} (nothing was consumed; poll again later)"
        )
        self.why = why


class Undecodable(PulsewatchError):
    """An event is stored but cannot be decoded; nothing after it is delivered."""

    def __init__(self, seq):
        super().__init__(
            f"event {seq} cannot be decoded: its stored batch is damaged or was written by a "
            "newer pulsewatch, and nothing after it is delivered; `pulsewatch repair` on the "
            "log names the damaged events"
        )
        self.seq = seq


class Truncated(PulsewatchError):
    """The events after the cursor are no longer stored; ``oldest`` is the next one that is."""

    def __init__(self, oldest):
        super().__init__(
            "the events after the cursor are no longer in the log (deleted by retention, or "
            f"lost to damage and left out by a salvage): the next stored is seq {oldest}"
        )
        self.oldest = oldest


class Closed(PulsewatchError):
    """The host will deliver no more events in this run: commit and return."""

    def __init__(self):
        super().__init__("the host closed the feed: no more events will come in this run")


def _feed_error(error):
    """The SDK's error for a ``poll-error`` or ``wait-error`` of the host."""
    if isinstance(error, feed.PollError_Unavailable):
        return Unavailable(error.value)
    if isinstance(error, feed.PollError_Undecodable):
        return Undecodable(error.value)
    if isinstance(error, feed.PollError_Truncated):
        return Truncated(error.value)
    return Closed()


def _call(function, *args):
    """``function(*args)`` of the feed, its failure raised as the SDK's error."""
    try:
        return function(*args)
    except Err as e:
        raise _feed_error(e.value) from None


def _bytes_of(value, what):
    """``value`` as bytes: bytes-like as is, text as UTF-8."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise PulsewatchError(f"{what} is of type {type(value).__name__}: give bytes or text")


_U64 = struct.Struct("<Q")
_HEADER = 57  # seq 8, kind 1, entity 16, collective 16, timestamp 8, payload length 8


class EventRef:
    """One event of a :class:`Batch`, read in place. The ``*_int`` fields are the UUIDs as
    integers, cheaper than the ``uuid.UUID`` of ``entity`` and ``collective``."""

    __slots__ = ("_buf", "_at")

    def __init__(self, buf, at):
        self._buf = buf
        self._at = at

    @property
    def seq(self):
        return _U64.unpack_from(self._buf, self._at)[0]

    @property
    def kind_index(self):
        """The kind as its place in :data:`KINDS`."""
        return self._buf[self._at + 8]

    @property
    def kind(self):
        """``created``, ``updated``, ``archived`` or ``deleted``."""
        return KINDS[self._buf[self._at + 8]]

    @property
    def entity_int(self):
        return int.from_bytes(self._buf[self._at + 9 : self._at + 25], "little")

    @property
    def entity(self):
        return uuid.UUID(int=self.entity_int)

    @property
    def collective_int(self):
        return int.from_bytes(self._buf[self._at + 25 : self._at + 41], "little")

    @property
    def collective(self):
        return uuid.UUID(int=self.collective_int)

    @property
    def timestamp_ms(self):
        """When the writer recorded the change, in ms since the Unix epoch."""
        return _U64.unpack_from(self._buf, self._at + 41)[0]

    @property
    def payload(self):
        """The application's bytes, as a ``memoryview`` into the batch (``bytes(...)`` copies)."""
        length = _U64.unpack_from(self._buf, self._at + 49)[0]
        start = self._at + _HEADER
        return self._buf[start : start + length]

    def __repr__(self):
        return (
            f"EventRef(seq={self.seq}, kind={self.kind!r}, entity={self.entity}, "
            f"collective={self.collective}, timestamp_ms={self.timestamp_ms}, "
            f"payload={bytes(self.payload)!r})"
        )


class Batch:
    """The events of one poll, in seq order, as the host packed them: iterate it for
    :class:`EventRef` views."""

    __slots__ = ("_buf", "_len")

    def __init__(self, data, count):
        self._buf = memoryview(data)
        self._len = count

    def __len__(self):
        return self._len

    def __bool__(self):
        return self._len > 0

    def __iter__(self):
        buf, at, end = self._buf, 0, len(self._buf)
        unpack = _U64.unpack_from
        while at < end:
            yield EventRef(buf, at)
            at += _HEADER + unpack(buf, at + 49)[0]


class ChangePoller:
    """A cursor over the feed: the seq of the last event polled (0 before the first)."""

    def __init__(self, last_seq=0, batch_limit=DEFAULT_BATCH_LIMIT):
        self._last_seq = last_seq
        self._batch_limit = max(1, batch_limit)

    @classmethod
    def new(cls):
        """A poller from the first event."""
        return cls(0)

    @classmethod
    def from_sequence(cls, seq):
        """A poller that delivers the events after ``seq``."""
        return cls(seq)

    @classmethod
    def from_head(cls):
        """A poller that delivers the events appended from now on."""
        return cls(_call(feed.head))

    @classmethod
    def from_time(cls, timestamp_ms):
        """A poller from the first event stamped at or after ``timestamp_ms``."""
        return cls(_call(feed.seq_at, timestamp_ms))

    def with_batch_limit(self, limit):
        """This poller, asking for at most ``limit`` events a poll."""
        self._batch_limit = max(1, limit)
        return self

    def last_sequence(self):
        """The cursor: the seq of the last event polled."""
        return self._last_seq

    def poll(self):
        """The next events, as the WIT's ``event`` records (empty when caught up)."""
        events, seq = _call(feed.poll, self._last_seq, self._batch_limit)
        self._last_seq = seq
        return events

    def poll_batch(self):
        """The next events, packed, as a :class:`Batch` of views (empty when caught up)."""
        data, seq = _call(feed.poll_packed, self._last_seq, self._batch_limit)
        # Events are gap-free: the cursor's move is the count.
        count = seq - self._last_seq
        self._last_seq = seq
        return Batch(data, count)

    def wait(self, timeout_ms=_WAIT_MS):
        """Waits until events after the cursor arrive (True) or ``timeout_ms`` passes (False);
        raises :class:`Closed` when the host will deliver no more."""
        return _call(feed.wait, self._last_seq, timeout_ms) > self._last_seq


class Checkpoint:
    """The cursor and the plugin's state, kept in one file in ``/state`` and replaced
    atomically (a temporary file, synced, renamed): the Rust SDK's format, byte for byte."""

    _MAGIC = b"pulsewatch-checkpoint v1"

    def __init__(self, directory=STATE_DIR):
        self.directory = directory
        self._path = os.path.join(directory, "checkpoint")
        self._temp = os.path.join(directory, "checkpoint.tmp")

    def load(self):
        """``(seq, state)`` as last committed, or None before the first commit."""
        try:
            with open(self._path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise PulsewatchError(f"cannot read {self._path}: {e.strerror}") from None
        parts = data.split(b"\n", 2)
        if parts[0] != self._MAGIC:
            raise PulsewatchError(
                f"{self._path} is not a pulsewatch checkpoint: its first line is not "
                f"{self._MAGIC.decode()!r}"
            )
        if len(parts) < 2 or not parts[1].isdigit():
            raise PulsewatchError(
                f"{self._path} is not a pulsewatch checkpoint: its second line is not a seq"
            )
        if len(parts) < 3:
            raise PulsewatchError(
                f"{self._path} is not a pulsewatch checkpoint: it ends before the plugin's state"
            )
        return int(parts[1]), parts[2]

    def commit(self, seq, state):
        """Replaces the checkpoint with ``seq`` and ``state`` (bytes, or text written as UTF-8),
        durably."""
        state = _bytes_of(state, "the state")
        try:
            with open(self._temp, "wb") as file:
                file.write(self._MAGIC + b"\n" + str(seq).encode() + b"\n" + state)
                file.flush()
                os.fsync(file.fileno())
            os.replace(self._temp, self._path)
        except OSError as e:
            raise PulsewatchError(
                f"cannot commit the checkpoint at seq {seq} to {self._path}: {e.strerror}"
            ) from None
        # Makes the rename itself durable, where the directory can be synced.
        try:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass


class Plugin:
    """A change-feed plugin, driven by :func:`run`. Override ``process`` and ``snapshot``, and
    ``restore`` when it keeps state."""

    @classmethod
    def restore(cls, state):
        """The plugin rebuilt from the state it last committed (bytes), or new (``None``)."""
        return cls()

    def process(self, batch):
        """Processes one :class:`Batch`, in seq order."""
        raise NotImplementedError("a plugin processes batches: define process(self, batch)")

    def snapshot(self):
        """The state (bytes, or text) to commit with the cursor after each batch."""
        return b""

    def truncated(self, cursor, oldest):
        """Called when the events after ``cursor`` were deleted before the plugin read them;
        ``oldest`` is the oldest one stored. Return to go on from there (the deleted events
        are lost to this plugin); the default raises, so nothing is skipped unsaid."""
        raise PulsewatchError(
            f"events {cursor + 1}..{oldest - 1} are no longer in the log (deleted by retention, "
            "or lost to damage and left out by a salvage) and this plugin had not read them; to "
            f"go on from seq {oldest} without them, override truncated(cursor, oldest)"
        )

    def finish(self, cursor):
        """Called once when the host closes the feed, after the last commit."""


def _retrying(attempt, transient):
    """``attempt()``, tried again while ``transient(error)`` says why its error is worth another
    try (``None``: it is not), with doubling pauses from 100 ms (3 s in all)."""
    pause = 0.1
    for _ in range(_RETRIES):
        try:
            return attempt()
        except PulsewatchError as e:
            why = transient(e)
            if why is None:
                raise
            print(f"pulsewatch: {why}; retrying in {pause:g} s", file=sys.stderr)
            time.sleep(pause)
            pause *= 2
    return attempt()


def _feed_unavailable(error):
    return f"feed unavailable ({error.why})" if isinstance(error, Unavailable) else None


def _start_position():
    """Where a plugin without a checkpoint starts, as the host says."""
    start = os.environ.get(START_VARIABLE, "beginning")
    if start == "beginning":
        return 0
    if start == "head":
        return ChangePoller.from_head().last_sequence()
    if start.startswith("time:") and start[5:].isdigit():
        return ChangePoller.from_time(int(start[5:])).last_sequence()
    if start.isdigit():
        seq, head = int(start), ChangePoller.from_head().last_sequence()
        if seq > head:
            raise PulsewatchError(
                f"the start position, after seq {seq}, is beyond the head, seq {head}: events "
                f"{head + 1}..{seq} would never be delivered; start at most at the head"
            )
        return seq
    raise PulsewatchError(
        f"{START_VARIABLE}={start}: expected beginning, head, a seq or time:<ms>"
    )


def _drive(steps, start, batch_limit):
    """The loop of :func:`run` and of ``pulsewatch.transform``: from ``start`` (where the host
    says when ``None``), poll, ``steps.process`` each batch, ``steps.commit`` its cursor, and
    wait while caught up; ``steps.finish`` once the host closes the feed."""
    if start is None:
        start = _start_position()
    poller = ChangePoller(start, batch_limit)
    while True:
        try:
            batch = _retrying(poller.poll_batch, _feed_unavailable)
        except Truncated as e:
            steps.truncated(poller.last_sequence(), e.oldest)
            poller = ChangePoller(e.oldest - 1, batch_limit)
            continue
        if not batch:
            try:
                poller.wait()
            except Closed:
                break
            continue
        steps.process(batch)
        steps.commit(poller.last_sequence())
    steps.finish(poller.last_sequence())


class _Stateful:
    """A :class:`Plugin` in the loop, its cursor and state committed to a :class:`Checkpoint`."""

    def __init__(self, plugin, checkpoint):
        self.plugin = plugin
        self.checkpoint = checkpoint
        self.process = plugin.process
        self.truncated = plugin.truncated
        self.finish = plugin.finish

    def commit(self, cursor):
        self.checkpoint.commit(cursor, self.plugin.snapshot())


def run(plugin_class, checkpoint=None, batch_limit=DEFAULT_BATCH_LIMIT):
    """Runs ``plugin_class`` over the feed until the host closes it: resume from the
    checkpoint, then poll, process, commit, and wait while caught up."""
    checkpoint = checkpoint or Checkpoint()
    saved = checkpoint.load()
    plugin = plugin_class.restore(saved[1] if saved else None)
    _drive(_Stateful(plugin, checkpoint), saved[0] if saved else None, batch_limit)


def _command(runner):
    """A ``wasi:cli/run`` export that calls ``runner()``; an error ends the plugin with
    ``Error: <sentence>`` on stderr and a failed exit status."""

    class Run(exports.Run):
        def run(self):
            try:
                runner()
            except Exception as e:  # every error ends the plugin, said as a sentence
                text = str(e) or type(e).__name__
                print(f"Error: {text}", file=sys.stderr)
                raise Err(None) from None

    return Run


def command(plugin_class, batch_limit=DEFAULT_BATCH_LIMIT):
    """The ``wasi:cli/run`` export that runs ``plugin_class``: assign it to ``Run`` in the
    module componentize-py builds. An error ends the plugin with ``Error: <sentence>`` on stderr
    and a failed exit status."""
    return _command(lambda: run(plugin_class, batch_limit=batch_limit))

"""Transforms: plugins that derive events into output logs, exactly once with their cursor.

A transform is a class with ``restore``, ``process(batch, out)`` and ``snapshot`` (see
:class:`Transform`); ``Run = pulsewatch.transform.command(MyTransform)`` makes it the WASI
command. In ``process`` it emits derived events into ``out`` (an :class:`Emitter`); after each
batch :func:`run` commits them with the new cursor and ``snapshot()`` through the host's
``pulse:watch/output``, in one step: however a run ends, the outputs hold each input event's
derived events exactly once. There is no ``/state`` checkpoint: the host keeps the cursor and
state with the derived events, and a restarted transform resumes from :meth:`Emitter.committed`.
A transform must therefore derive the same events from the same state and input (no clock, no
randomness in what it emits). This is the Rust SDK's ``Transform`` and ``Emitter``.

``guest/python/build.sh`` builds a module that imports this one itself (``import
pulsewatch.transform``, ``from pulsewatch.transform import ...`` or ``from pulsewatch import
transform``) against a world that imports ``pulse:watch/output``, which the host grants only to
a plugin given output logs.
"""

import uuid

import pulsewatch
from componentize_py_types import Err

try:
    from wit_world.imports import feed, output as _output
except ImportError:
    raise pulsewatch.PulsewatchError(
        "this plugin was built without pulse:watch/output: import pulsewatch.transform in the "
        "module given to build.sh itself (not only in a module it imports), as `import "
        "pulsewatch.transform`, so that build.sh builds it as a transform"
    ) from None

__all__ = [
    "CommitError",
    "Committed",
    "Emitter",
    "Output",
    "Transform",
    "command",
    "run",
]

_KINDS = {
    "created": feed.ChangeKind.CREATED,
    "updated": feed.ChangeKind.UPDATED,
    "archived": feed.ChangeKind.ARCHIVED,
    "deleted": feed.ChangeKind.DELETED,
}
_KIND_LIST = [_KINDS[name] for name in pulsewatch.KINDS]
_LOW64 = (1 << 64) - 1


class CommitError(pulsewatch.PulsewatchError):
    """A commit did not happen. ``invalid``: it breaks a rule of the contract (a bug in the
    plugin) and nothing was written; otherwise an output log could not be written now, and
    committing the same again completes it without writing anything twice."""

    def __init__(self, error, reading=False):
        self.invalid = isinstance(error, _output.CommitError_Invalid)
        self.why = error.value
        if reading:
            text = f"cannot read the transform's last commit: {self.why}"
        elif self.invalid:
            text = f"the host refused the commit: {self.why}"
        else:
            text = f"the commit did not complete: {self.why} (committing the same again completes it)"
        super().__init__(text)


class Committed:
    """Where a transform resumes: the seq of the last input event it had processed
    (``cursor``) and its state as of then (``state``: bytes, ``None`` for its initial state)."""

    __slots__ = ("cursor", "state")

    def __init__(self, cursor, state):
        self.cursor = cursor
        self.state = state

    def __repr__(self):
        return f"Committed(cursor={self.cursor}, state={self.state!r})"


class Output(int):
    """An output log granted to the plugin, found by name with :meth:`Emitter.output`."""


def _uuid(value, what):
    """The WIT ``uuid`` of a ``uuid.UUID``, its text, or its integer."""
    number = None
    if isinstance(value, uuid.UUID):
        number = value.int
    elif isinstance(value, str):
        try:
            number = uuid.UUID(value).int
        except ValueError:
            pass
    elif type(value) is int and 0 <= value < 1 << 128:
        number = value
    if number is None:
        raise pulsewatch.PulsewatchError(
            f"{what} {value!r} is not a UUID: give a uuid.UUID, its text or a 128-bit integer"
        )
    return feed.Uuid(hi=number >> 64, lo=number & _LOW64)


def _kind(kind):
    """The WIT ``change-kind`` of a name in :data:`pulsewatch.KINDS` or its place there."""
    if isinstance(kind, str) and kind in _KINDS:
        return _KINDS[kind]
    if type(kind) is int and 0 <= kind < len(_KIND_LIST):
        return _KIND_LIST[kind]
    raise pulsewatch.PulsewatchError(
        f"{kind!r} is not a kind of change: give one of {', '.join(pulsewatch.KINDS)} or "
        "its place in pulsewatch.KINDS"
    )


def _check_seq(value, what):
    """Raises unless ``value`` is a seq: a whole number from 0 below 2**64."""
    if not (type(value) is int and 0 <= value < 1 << 64):
        raise pulsewatch.PulsewatchError(
            f"{what} {value!r} is not a seq: give a whole number from 0"
        )


def _call(function, *args, reading=False):
    """``function(*args)`` of the output, its failure raised as :class:`CommitError`."""
    try:
        return function(*args)
    except Err as e:
        raise CommitError(e.value, reading) from None


class Emitter:
    """Collects the events a transform derives, and commits them with its cursor and state in
    one step (see ``pulse:watch/output`` in wit/feed.wit)."""

    def __init__(self):
        self.names = _output.outputs()
        self._events = []

    def output(self, name):
        """The granted output called ``name``; an error names the ones granted."""
        try:
            return Output(self.names.index(name))
        except ValueError:
            granted = ", ".join(self.names) if self.names else "none"
            raise pulsewatch.PulsewatchError(
                f"no output log called {name!r} is granted to this plugin (granted: {granted}); "
                f'grant it in the plugin\'s manifest entry, `outputs = ["{name}.redb"]`'
            ) from None

    def emit(self, output, from_seq, kind, entity, collective, payload=b""):
        """Derives an event from the input event ``from_seq`` into ``output``, to be written at
        the next commit. ``kind`` is a name in :data:`pulsewatch.KINDS` (or its place there);
        ``entity`` and ``collective`` are ``uuid.UUID``s, their text or their integers;
        ``payload`` is bytes (or text, written as UTF-8). Emit in input order."""
        if not (isinstance(output, int) and 0 <= output < len(self.names)):
            raise pulsewatch.PulsewatchError(
                f"output {output!r} is not an output: give emit what out.output(name) returned"
            )
        _check_seq(from_seq, "from_seq")
        self._events.append(
            _output.Derived(
                output=int(output),
                from_=from_seq,
                kind=_kind(kind),
                entity=_uuid(entity, "entity"),
                collective=_uuid(collective, "collective"),
                payload=pulsewatch._bytes_of(payload, "the payload"),
            )
        )

    def pending(self):
        """How many events wait for the next commit."""
        return len(self._events)

    def commit(self, cursor, state):
        """Writes the pending events and moves the cursor to ``cursor`` with ``state`` (bytes, or
        text written as UTF-8), atomically and durably. On an error the pending events are kept,
        so that committing again retries."""
        _check_seq(cursor, "the cursor")
        _call(_output.commit, cursor, pulsewatch._bytes_of(state, "the state"), self._events)
        self._events = []

    @staticmethod
    def committed():
        """What the plugin last committed, as :class:`Committed`; ``None`` before its first
        commit."""
        found = _call(_output.committed, reading=True)
        return None if found is None else Committed(found.cursor, found.state)


class Transform(pulsewatch.Plugin):
    """A plugin that derives events into output logs, driven by :func:`run`. Override
    ``process`` and ``snapshot``, and ``restore`` when it keeps state; ``truncated`` and
    ``finish`` are :class:`pulsewatch.Plugin`'s."""

    def process(self, batch, out):
        """Processes one :class:`pulsewatch.Batch`, in seq order, emitting into ``out``."""
        raise NotImplementedError(
            "a transform processes batches: define process(self, batch, out)"
        )


def _output_unavailable(error):
    if isinstance(error, CommitError) and not error.invalid:
        return f"output unavailable ({error.why})"
    return None


class _Deriving:
    """A :class:`Transform` in the loop, committing through the host."""

    def __init__(self, transform):
        self.out = Emitter()
        self.truncated = transform.truncated
        self.finish = transform.finish
        self._transform = transform

    def process(self, batch):
        self._transform.process(batch, self.out)

    def commit(self, cursor):
        state = self._transform.snapshot()
        pulsewatch._retrying(lambda: self.out.commit(cursor, state), _output_unavailable)


def run(transform_class, batch_limit=pulsewatch.DEFAULT_BATCH_LIMIT):
    """Runs ``transform_class`` over the feed until the host closes it: resume from its last
    commit, then poll, process, commit the derived events with the cursor and state, and wait
    while caught up. Commits that fail as unavailable are tried again as polls are."""
    saved = pulsewatch._retrying(Emitter.committed, _output_unavailable)
    transform = transform_class.restore(saved.state if saved else None)
    pulsewatch._drive(_Deriving(transform), saved.cursor if saved else None, batch_limit)


def command(transform_class, batch_limit=pulsewatch.DEFAULT_BATCH_LIMIT):
    """The ``wasi:cli/run`` export that runs ``transform_class``: assign it to ``Run`` in the
    module componentize-py builds."""
    return pulsewatch._command(lambda: run(transform_class, batch_limit=batch_limit))

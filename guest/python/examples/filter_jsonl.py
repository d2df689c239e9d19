"""Writes the events that match a filter as JSON lines to /state/matches.jsonl: the Rust example
`filter-jsonl` in Python, with the same output, file and checkpoint, byte for byte.

Arguments select what matches; all given must hold: `kind=NAME` (repeatable: any of them),
`collective=UUID`, `entity=UUID`. Without a `kind=` argument it keeps archived and deleted
events. The committed state is the length of the output file: on restart the file is cut back
to it, so events processed after the last commit are not written twice."""

import json
import os
import sys

import pulsewatch

OUTPUT = "/state/matches.jsonl"


class Filter:
    def __init__(self, args):
        self.kinds, self.collective, self.entity = [], None, None
        for arg in args:
            key, _, value = arg.partition("=")
            if key == "kind" and _:
                self.kinds.append(value)
            elif key == "collective" and _:
                self.collective = value
            elif key == "entity" and _:
                self.entity = value
            else:
                raise pulsewatch.PulsewatchError(
                    f"unknown argument {json.dumps(arg)}: expected kind=, collective= or entity="
                )
        self.kinds = self.kinds or ["archived", "deleted"]

    def matches(self, event):
        return (
            event.kind in self.kinds
            and (self.collective is None or self.collective == str(event.collective))
            and (self.entity is None or self.entity == str(event.entity))
        )


def not_json(constant):
    raise ValueError(f"{constant} is not JSON")


def json_line(event):
    """The event as the Rust example writes it: a payload that is JSON embedded as it is."""
    payload = bytes(event.payload)
    text = payload.decode("utf-8", errors="replace")
    try:
        # As serde_json: NaN and Infinity are not JSON.
        json.loads(payload, parse_constant=not_json)
        tail = f',"payload":{text}'
    except ValueError:
        tail = f',"payload_text":{json.dumps(text, ensure_ascii=False)}'
    return (
        f'{{"seq":{event.seq},"kind":"{event.kind}","entity":"{event.entity}",'
        f'"collective":"{event.collective}","timestamp_ms":{event.timestamp_ms}{tail}}}\n'
    ).encode()


class FilterJsonl(pulsewatch.Plugin):
    def __init__(self, committed):
        fd = os.open(OUTPUT, os.O_RDWR | os.O_CREAT, 0o644)
        self.out = os.fdopen(fd, "r+b")
        found = os.fstat(fd).st_size
        if found < committed:
            raise pulsewatch.PulsewatchError(
                f"{OUTPUT} holds {found} bytes, {committed} were committed: it was changed "
                "behind this plugin's back"
            )
        self.out.truncate(committed)
        self.out.seek(committed)
        self.filter = Filter(sys.argv[1:])
        self.written, self.matched = committed, 0

    @classmethod
    def restore(cls, state):
        return cls(int(state) if state is not None else 0)

    def process(self, batch):
        for event in batch:
            if self.filter.matches(event):
                line = json_line(event)
                self.out.write(line)
                self.written += len(line)
                self.matched += 1
        # The snapshot promises these bytes are on disk.
        self.out.flush()
        os.fsync(self.out.fileno())

    def snapshot(self):
        return str(self.written).encode()

    def finish(self, cursor):
        print(f"matched {self.matched} events in this run; {OUTPUT} holds {self.written} bytes")
        print(f"cursor: {cursor}")


Run = pulsewatch.command(FilterJsonl)

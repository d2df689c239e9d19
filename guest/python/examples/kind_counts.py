"""Counts changes per collective and kind, and prints the totals when the feed closes: the
Rust example `kind-counts` in Python, with the same output and the same checkpoint, byte for
byte. The counts are committed with the cursor after every batch."""

import json
import uuid

import pulsewatch


def line(counts):
    return " ".join(f"{kind}={n}" for kind, n in zip(pulsewatch.KINDS, counts))


class KindCounts(pulsewatch.Plugin):
    def __init__(self, per_collective=None):
        # By the collective's UUID as an integer: cheaper per event than its text.
        self.per_collective = per_collective or {}

    @classmethod
    def restore(cls, state):
        if state is None:
            return cls()
        saved = json.loads(state)["per_collective"]
        return cls({uuid.UUID(key).int: counts for key, counts in saved.items()})

    def process(self, batch):
        per_collective = self.per_collective
        for event in batch:
            key = event.collective_int
            counts = per_collective.get(key)
            if counts is None:
                counts = per_collective[key] = [0, 0, 0, 0]
            counts[event.kind_index] += 1

    def by_name(self):
        """The counts by the collective's UUID text, in its order (as the state keeps them)."""
        named = {str(uuid.UUID(int=key)): counts for key, counts in self.per_collective.items()}
        return dict(sorted(named.items()))

    def snapshot(self):
        return json.dumps({"per_collective": self.by_name()}, separators=(",", ":")).encode()

    def finish(self, cursor):
        totals = [0, 0, 0, 0]
        for collective, counts in self.by_name().items():
            print(f"collective {collective}: {line(counts)}")
            totals = [t + n for t, n in zip(totals, counts)]
        print(f"totals: {line(totals)}")
        print(f"cursor: {cursor}")


Run = pulsewatch.command(KindCounts)

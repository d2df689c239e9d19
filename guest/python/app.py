from wit_world import exports
from wit_world.imports import feed


class Run(exports.Run):
    def run(self) -> None:
        since = 0
        seen = 0
        while True:
            events, seq = feed.poll(since, 1000)
            if not events:
                break
            seen += len(events)
            since = seq
        print(f"events: {seen} cursor: {since}")

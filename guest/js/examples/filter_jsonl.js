// Writes the events that match a filter as JSON lines to /state/matches.jsonl: the Rust example
// `filter-jsonl` in JavaScript, with the same output, file and checkpoint, byte for byte.
//
// Arguments select what matches; all given must hold: `kind=NAME` (repeatable: any of them),
// `collective=UUID`, `entity=UUID`. Without a `kind=` argument it keeps archived and deleted
// events. The committed state is the length of the output file: on restart the file is cut
// back to it, so events processed after the last commit are not written twice.

import { getArguments } from 'wasi:cli/environment@0.2.12';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';
import { Plugin, PulsewatchError, command, writeAll } from 'pulsewatch';

const OUTPUT = '/state/matches.jsonl';
const encoder = new TextEncoder();
const decoder = new TextDecoder();

class Filter {
  constructor(args) {
    this.kinds = [];
    this.collective = null;
    this.entity = null;
    for (const arg of args) {
      const at = arg.indexOf('=');
      const [key, value] = at < 0 ? [arg, null] : [arg.slice(0, at), arg.slice(at + 1)];
      if (key === 'kind' && value !== null) this.kinds.push(value);
      else if (key === 'collective' && value !== null) this.collective = value;
      else if (key === 'entity' && value !== null) this.entity = value;
      else {
        throw new PulsewatchError(
          `unknown argument ${JSON.stringify(arg)}: expected kind=, collective= or entity=`,
        );
      }
    }
    if (this.kinds.length === 0) this.kinds = ['archived', 'deleted'];
  }

  matches(event) {
    return (
      this.kinds.includes(event.kind) &&
      (this.collective === null || this.collective === event.collective) &&
      (this.entity === null || this.entity === event.entity)
    );
  }
}

/** The event as the Rust example writes it: a payload that is JSON embedded as it is. */
function jsonLine(event) {
  const text = decoder.decode(event.payload);
  let tail;
  try {
    JSON.parse(text);
    tail = `,"payload":${text}`;
  } catch {
    tail = `,"payload_text":${JSON.stringify(text)}`;
  }
  return encoder.encode(
    `{"seq":${event.seq},"kind":"${event.kind}","entity":"${event.entity}",` +
      `"collective":"${event.collective}","timestamp_ms":${event.timestampMs}${tail}}\n`,
  );
}

class FilterJsonl extends Plugin {
  constructor(committed) {
    super();
    const found = getDirectories().find(([, name]) => name === '/state');
    if (!found) throw new PulsewatchError('the host grants no /state directory');
    this.out = found[0].openAt({}, 'matches.jsonl', { create: true }, { read: true, write: true });
    const size = Number(this.out.stat().size);
    if (size < committed) {
      throw new PulsewatchError(
        `${OUTPUT} holds ${size} bytes, ${committed} were committed: it was changed behind ` +
          "this plugin's back",
      );
    }
    this.out.setSize(BigInt(committed));
    this.filter = new Filter(getArguments().slice(1));
    this.written = committed;
    this.matched = 0;
  }

  static restore(state) {
    return new FilterJsonl(state === null ? 0 : Number(decoder.decode(state)));
  }

  process(batch) {
    for (const event of batch) {
      if (this.filter.matches(event)) {
        const line = jsonLine(event);
        writeAll(this.out, line, BigInt(this.written));
        this.written += line.length;
        this.matched += 1;
      }
    }
    // The snapshot promises these bytes are on disk.
    this.out.syncData();
  }

  snapshot() {
    return String(this.written);
  }

  finish(cursor) {
    console.log(`matched ${this.matched} events in this run; ${OUTPUT} holds ${this.written} bytes`);
    console.log(`cursor: ${cursor}`);
  }
}

export const run = command(FilterJsonl);

// Transforms: plugins that derive events into output logs, exactly once with their cursor.
//
// A transform is a class with `static restore(state)`, `process(batch, out)` and `snapshot()`
// (see `Transform`); `export const run = transform(MyTransform)` makes it the WASI command. In
// `process` it emits derived events into `out` (an `Emitter`); after each batch, `runTransform`
// commits them with the new cursor and `snapshot()` through the host's `pulse:watch/output`, in
// one step: however a run ends, the outputs hold each input event's derived events exactly
// once. There is no /state checkpoint: the host keeps the cursor and state with the derived
// events, and a restarted transform resumes from `Emitter.committed()`. A transform must
// therefore derive the same events from the same state and input (no clock, no randomness in
// what it emits). This is the Rust SDK's `Transform` and `Emitter`.
//
// `build.mjs` builds a source that itself imports 'pulsewatch/transform' against a world that
// imports `pulse:watch/output`, which the host grants only to a plugin given output logs.

import { commit, committed, outputs } from 'pulse:watch/output@0.3.0';
import {
  DEFAULT_BATCH_LIMIT,
  KINDS,
  Plugin,
  PulsewatchError,
  bytesOf,
  drive,
  exported,
  hexOfUuid,
  retrying,
} from './pulsewatch.js';

/** A commit did not happen: see `CommitInvalid` and `CommitUnavailable`. */
export class CommitError extends PulsewatchError {}

// An error reading the last commit says so: nothing was being committed.
const reading = (why) => `cannot read the transform's last commit: ${why}`;

/** The commit breaks a rule of the contract (a bug in the plugin); nothing was written. */
export class CommitInvalid extends CommitError {
  constructor(why, read = false) {
    super(read ? reading(why) : `the host refused the commit: ${why}`);
    this.why = why;
  }
}

/** An output log could not be written now; committing the same again later completes it
 * without writing anything twice. */
export class CommitUnavailable extends CommitError {
  constructor(why, read = false) {
    super(read ? reading(why) : `the commit did not complete: ${why} (committing the same again completes it)`);
    this.why = why;
  }
}

/** `f()` of the output, its failure thrown as the SDK's error (`read`: of reading the last
 * commit). */
function outputCall(f, read = false) {
  try {
    return f();
  } catch (e) {
    const error = e && e.payload;
    if (error && error.tag === 'invalid') throw new CommitInvalid(error.val, read);
    if (error && error.tag === 'unavailable') throw new CommitUnavailable(error.val, read);
    throw e;
  }
}

/** The WIT `uuid` of a UUID's text. */
function uuidOf(text, what) {
  const hex = hexOfUuid(text, what);
  return { hi: BigInt(`0x${hex.slice(0, 16)}`), lo: BigInt(`0x${hex.slice(16)}`) };
}

/** A seq as the WIT's u64; an error names `what` it was given as. */
function seqOf(value, what) {
  if (typeof value === 'bigint' ? value >= 0n : Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  throw new PulsewatchError(`${what} ${String(value)} is not a seq: give a whole number from 0`);
}

/** The WIT `change-kind` of a name in `KINDS` or its place there. */
function kindOf(kind) {
  const name = typeof kind === 'number' ? KINDS[kind] : kind;
  if (!KINDS.includes(name)) {
    throw new PulsewatchError(`${String(kind)} is not a kind of change: give one of ${KINDS.join(', ')} or its place in KINDS`);
  }
  return name;
}

/** Collects the events a transform derives, and commits them with its cursor and state in one
 * step (see `pulse:watch/output` in wit/feed.wit). */
export class Emitter {
  constructor() {
    /** The names of the granted outputs (each log's file name without `.redb`). */
    this.names = outputs();
    this._events = [];
  }
  /** The granted output called `name` (a number to emit into); an error names the ones
   * granted. */
  output(name) {
    const index = this.names.indexOf(name);
    if (index < 0) {
      const granted = this.names.length > 0 ? this.names.join(', ') : 'none';
      throw new PulsewatchError(
        `no output log called "${name}" is granted to this plugin (granted: ${granted}); grant ` +
          `it in the plugin's manifest entry, \`outputs = ["${name}.redb"]\``,
      );
    }
    return index;
  }
  /** Derives an event from the input event `from` (its seq) into `output`, to be written at the
   * next commit. `kind` is a name in `KINDS` (or its place there); `entity` and `collective` are
   * UUIDs' text; `payload` a Uint8Array or a string (written as UTF-8). Emit in input order. */
  emit(output, from, kind, entity, collective, payload = new Uint8Array()) {
    if (!Number.isInteger(output) || output < 0 || output >= this.names.length) {
      throw new PulsewatchError(`output ${String(output)} is not an output: give emit what out.output(name) returned`);
    }
    this._events.push({
      output,
      from: seqOf(from, 'from'),
      kind: kindOf(kind),
      entity: uuidOf(entity, 'entity'),
      collective: uuidOf(collective, 'collective'),
      payload: bytesOf(payload, 'the payload'),
    });
  }
  /** How many events wait for the next commit. */
  pending() {
    return this._events.length;
  }
  /** Writes the pending events and moves the cursor to `cursor` with `state` (a Uint8Array or a
   * string), atomically and durably. On an error the pending events are kept, so that
   * committing again retries. */
  commit(cursor, state) {
    const bytes = bytesOf(state, 'the state');
    const seq = seqOf(cursor, 'the cursor');
    outputCall(() => commit(seq, bytes, this._events));
    this._events = [];
  }
  /** What the plugin last committed, `{ cursor, state }` (state null for its initial state);
   * null before its first commit. */
  static committed() {
    const found = outputCall(() => committed(), true);
    if (found === undefined || found === null) return null;
    return { cursor: Number(found.cursor), state: found.state ?? null };
  }
}

/** A plugin that derives events into output logs, driven by `runTransform`. Override `process`
 * and `snapshot` (committed with the derived events), and `restore` when it keeps state;
 * `truncated` and `finish` are `Plugin`'s. */
export class Transform extends Plugin {
  /** Processes one batch (an array of `EventRef`s), in seq order, emitting into `out`. */
  process(_batch, _out) {
    throw new PulsewatchError('a transform processes batches: define process(batch, out)');
  }
}

const outputUnavailable = (e) => (e instanceof CommitUnavailable ? `output unavailable (${e.why})` : null);

/** Runs `TransformClass` over the feed until the host closes it: resume from its last commit,
 * then poll, process, commit the derived events with the cursor and state, and wait while
 * caught up. Commits that fail as unavailable are tried again as polls are. */
export function runTransform(TransformClass, { batchLimit = DEFAULT_BATCH_LIMIT } = {}) {
  const saved = retrying(() => Emitter.committed(), outputUnavailable);
  const plugin = TransformClass.restore(saved ? saved.state : null);
  const out = new Emitter();
  const steps = {
    process: (batch) => plugin.process(batch, out),
    commit: (cursor) => {
      const state = plugin.snapshot();
      retrying(() => out.commit(cursor, state), outputUnavailable);
    },
    truncated: (cursor, oldest) => plugin.truncated(cursor, oldest),
    finish: (cursor) => plugin.finish(cursor),
  };
  drive(steps, saved ? saved.cursor : null, batchLimit);
}

/** The `wasi:cli/run` export that runs `TransformClass`: `export const run =
 * transform(MyTransform)`. An error ends the plugin with `Error: <sentence>` on stderr and a
 * failed exit status. */
export function transform(TransformClass, options = {}) {
  return exported(() => runTransform(TransformClass, options));
}

// Write pulsewatch change-feed plugins in JavaScript.
//
// A plugin is a class with `static restore(state)`, `process(batch)`, `snapshot()` and, if it
// likes, `finish(cursor)` and `truncated(cursor, oldest)` (see `Plugin`); `export const run =
// command(MyPlugin)` in the module componentize-js builds makes it a WASI command. `run` drives
// it: it resumes from the checkpoint in /state, polls batches of events, hands each to
// `process`, commits the cursor with `snapshot()` atomically, waits while caught up, and returns
// after `finish` when the host closes the feed: the loop of the Rust SDK, with the same
// checkpoint file, byte for byte.
//
// Batches are read with `poll-packed`: one byte string for the whole batch, in the layout
// wit/feed.wit documents, and each `EventRef` reads its fields in place through a DataView.

import { head, pollPacked, seqAt, wait } from 'pulse:watch/feed@0.3.0';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';
import { getEnvironment } from 'wasi:cli/environment@0.2.12';
import { subscribeDuration } from 'wasi:clocks/monotonic-clock@0.2.12';

/** Events asked for in one poll: the seed's `ChangePoller` batch limit. */
export const DEFAULT_BATCH_LIMIT = 1000;

/** The directory the host preopens for the plugin, private to it. */
export const STATE_DIR = '/state';

/** The kinds of change, in the order of the WIT enum (`EventRef.kindIndex`). */
export const KINDS = Object.freeze(['created', 'updated', 'archived', 'deleted']);

// How long one wait lasts before the loop asks again: the host ends it at once when events
// arrive or the run stops.
const WAIT_MS = 3_600_000;
// Tries of an `unavailable` feed or output, with doubling pauses from 100 ms (3 s in all).
const RETRIES = 5;
// seq 8, kind 1, entity 16, collective 16, timestamp 8, payload length 8.
const HEADER = 57;

/** An error of the SDK's, whose message is a sentence a plugin author can act on. */
export class PulsewatchError extends Error {}

/** The feed could not be read now; nothing was consumed: poll again later. */
export class Unavailable extends PulsewatchError {
  constructor(why) {
    super(`the feed is unavailable: ${why} (nothing was consumed; poll again later)`);
    this.why = why;
  }
}

/** An event is stored but cannot be decoded; nothing after it is delivered. */
export class Undecodable extends PulsewatchError {
  constructor(seq) {
    super(
      `event ${seq} cannot be decoded: its stored batch is damaged or was written by a newer ` +
        'pulsewatch, and nothing after it is delivered; `pulsewatch repair` on the log names ' +
        'the damaged events',
    );
    this.seq = seq;
  }
}

/** The events after the cursor are no longer stored; `oldest` is the next one that is. */
export class Truncated extends PulsewatchError {
  constructor(oldest) {
    super(
      'the events after the cursor are no longer in the log (deleted by retention, or lost to ' +
        `damage and left out by a salvage): the next stored is seq ${oldest}`,
    );
    this.oldest = oldest;
  }
}

/** The host will deliver no more events in this run: commit and return. */
export class Closed extends PulsewatchError {
  constructor() {
    super('the host closed the feed: no more events will come in this run');
  }
}

/** `f()`, a failure of the feed thrown as the SDK's error. */
function feedCall(f) {
  try {
    return f();
  } catch (e) {
    const error = e && e.payload;
    if (error === 'closed') throw new Closed();
    if (error && error.tag === 'unavailable') throw new Unavailable(error.val);
    if (error && error.tag === 'undecodable') throw new Undecodable(Number(error.val));
    if (error && error.tag === 'truncated') throw new Truncated(Number(error.val));
    throw e;
  }
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** The UUID text of the little-endian 128-bit value at `at` in `bytes`. */
function uuidAt(bytes, at) {
  let hex = '';
  for (let i = 15; i >= 0; i--) {
    hex += HEX[bytes[at + i]];
    if (i === 12 || i === 10 || i === 8 || i === 6) hex += '-';
  }
  return hex;
}

// A collective's key is its 16 bytes decoded as x-user-defined: each byte one UTF-16 code unit
// (0x00-0x7f as is, 0x80-0xff as U+F780-U+F7FF), so distinct collectives get distinct keys. One
// native call makes it, where reading the bytes one by one costs the interpreter far more.
const KEYS = new TextDecoder('x-user-defined');

/** One event of a batch (see `ChangePoller.pollBatch`), read in place. Numbers are exact up to
 * 2^53. */
export class EventRef {
  constructor(batch, at, kindIndex) {
    this._batch = batch;
    this._at = at;
    // The kind (its place in `KINDS`) is read when the event is made, not by a getter: nearly
    // every plugin reads it, and the engine (an interpreter: a component cannot JIT) pays
    // dearly for each call.
    this.kindIndex = kindIndex;
  }
  get seq() {
    return Number(this._batch._view.getBigUint64(this._at, true));
  }
  /** `created`, `updated`, `archived` or `deleted`. */
  get kind() {
    return KINDS[this.kindIndex];
  }
  /** The entity's UUID, as text. */
  get entity() {
    return uuidAt(this._batch._bytes, this._at + 9);
  }
  /** The collective's UUID, as text. */
  get collective() {
    return uuidAt(this._batch._bytes, this._at + 25);
  }
  /** A key for the collective, cheaper than its text: `collectiveOfKey` gives the text back,
   * `keyOfCollective` the key of a text. */
  get collectiveKey() {
    const at = this._at + 25;
    return KEYS.decode(this._batch._bytes.subarray(at, at + 16));
  }
  /** When the writer recorded the change, in ms since the Unix epoch. */
  get timestampMs() {
    return Number(this._batch._view.getBigUint64(this._at + 41, true));
  }
  /** The application's bytes: a view into the batch (`.slice()` copies). */
  get payload() {
    const length = payloadLength(this._batch._view, this._at);
    const start = this._at + HEADER;
    return this._batch._bytes.subarray(start, start + length);
  }
}

/** The payload length (a u64) of the entry at `at`. */
function payloadLength(view, at) {
  return view.getUint32(at + 49, true) + view.getUint32(at + 53, true) * 2 ** 32;
}

/** The collective's UUID text of a key `EventRef.collectiveKey` gave. */
export function collectiveOfKey(key) {
  if (typeof key !== 'string' || key.length !== 16) {
    throw new PulsewatchError(`${String(key)} is not a collective's key: EventRef.collectiveKey gives one`);
  }
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const unit = key.charCodeAt(i);
    bytes[i] = unit < 0x80 ? unit : unit - 0xf700;
  }
  return uuidAt(bytes, 0);
}

/** The 32 hex digits of a UUID's text; an error names `what` it was given as. The SDK's own,
 * shared with `pulsewatch/transform`; not part of the API. */
export function hexOfUuid(text, what) {
  const hex = typeof text === 'string' ? text.replaceAll('-', '') : '';
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) {
    throw new PulsewatchError(`${what} ${String(text)} is not a UUID's text (such as 67e55044-10b1-426f-9247-bb680e5fe0c8)`);
  }
  return hex;
}

/** The key `EventRef.collectiveKey` gives for the collective whose UUID text is `uuid`. */
export function keyOfCollective(uuid) {
  const hex = hexOfUuid(uuid, 'the collective');
  const bytes = new Uint8Array(16);
  // Little-endian: the last byte of the text first.
  for (let i = 0; i < 16; i++) bytes[i] = parseInt(hex.slice(30 - 2 * i, 32 - 2 * i), 16);
  return KEYS.decode(bytes);
}

/** The events of one poll, in seq order: an array of `EventRef`s over the bytes the host packed.
 * A plain array, because the engine walks an array in a `for...of` without calling an
 * iterator for each step. */
function eventsOf(bytes) {
  const batch = { _bytes: bytes, _view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
  const view = batch._view;
  const events = [];
  for (let at = 0; at < bytes.length; at += HEADER + payloadLength(view, at)) {
    events.push(new EventRef(batch, at, bytes[at + 8]));
  }
  return events;
}

/** A cursor over the feed: the seq of the last event polled (0 before the first). */
export class ChangePoller {
  constructor(lastSeq = 0, batchLimit = DEFAULT_BATCH_LIMIT) {
    this._lastSeq = BigInt(lastSeq);
    this._batchLimit = Math.max(1, batchLimit);
  }
  /** A poller from the first event. */
  static new() {
    return new ChangePoller(0);
  }
  /** A poller that delivers the events after `seq`. */
  static fromSequence(seq) {
    return new ChangePoller(seq);
  }
  /** A poller that delivers the events appended from now on. */
  static fromHead() {
    return new ChangePoller(feedCall(() => head()));
  }
  /** A poller from the first event stamped at or after `timestampMs`. */
  static fromTime(timestampMs) {
    return new ChangePoller(feedCall(() => seqAt(BigInt(timestampMs))));
  }
  /** This poller, asking for at most `limit` events a poll. */
  withBatchLimit(limit) {
    this._batchLimit = Math.max(1, limit);
    return this;
  }
  /** The cursor: the seq of the last event polled. */
  lastSequence() {
    return Number(this._lastSeq);
  }
  /** The next events, packed, as an array of `EventRef`s read in place (empty when caught
   * up). */
  pollBatch() {
    const [bytes, seq] = feedCall(() => pollPacked(this._lastSeq, this._batchLimit));
    this._lastSeq = seq;
    return eventsOf(bytes);
  }
  /** The next events, each read into a plain object (empty when caught up). */
  poll() {
    return this.pollBatch().map((e) => ({
      seq: e.seq,
      kind: e.kind,
      entity: e.entity,
      collective: e.collective,
      timestampMs: e.timestampMs,
      payload: e.payload.slice(),
    }));
  }
  /** Waits until events after the cursor arrive (true) or `timeoutMs` passes (false); throws
   * `Closed` when the host will deliver no more. */
  wait(timeoutMs = WAIT_MS) {
    return feedCall(() => wait(this._lastSeq, timeoutMs)) > this._lastSeq;
  }
}

/** The preopened directory `path`. */
function preopened(path) {
  const found = getDirectories().find(([, name]) => name === path);
  if (!found) throw new PulsewatchError(`the host grants no ${path} directory`);
  return found[0];
}

/** What a WASI filesystem error says. */
function fsWhy(e) {
  return (e && e.payload) || String(e);
}

/** Reads the whole file `name` of `dir`, or null if there is none. */
export function readFile(dir, name) {
  let file;
  try {
    file = dir.openAt({}, name, {}, { read: true });
  } catch (e) {
    if (fsWhy(e) === 'no-entry') return null;
    throw e;
  }
  const chunks = [];
  let offset = 0n;
  for (;;) {
    const [chunk, end] = file.read(65536n, offset);
    chunks.push(chunk);
    offset += BigInt(chunk.length);
    if (end || chunk.length === 0) break;
  }
  const all = new Uint8Array(Number(offset));
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return all;
}

/** Writes all of `bytes` to `file` at `offset`. */
export function writeAll(file, bytes, offset = 0n) {
  let done = 0;
  while (done < bytes.length) {
    done += Number(file.write(bytes.subarray(done), offset + BigInt(done)));
  }
}

const encoder = new TextEncoder();

/** Bytes to write: a Uint8Array as is, a string as UTF-8; an error names `what` it was given
 * as. The SDK's own, shared with `pulsewatch/transform`; not part of the API. */
export function bytesOf(value, what) {
  if (typeof value === 'string') return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  const given = value === null ? 'null' : Array.isArray(value) ? 'an array' : `of type ${typeof value}`;
  throw new PulsewatchError(`${what} is ${given}: give a Uint8Array or a string`);
}

const MAGIC = 'pulsewatch-checkpoint v1';

/** The cursor and the plugin's state, kept in one file in /state and replaced atomically (a
 * temporary file, synced, renamed): the Rust SDK's format, byte for byte. */
export class Checkpoint {
  constructor(directory = STATE_DIR) {
    this.directory = directory;
    this._dir = preopened(directory);
  }
  /** `[seq, state]` as last committed, or null before the first commit. */
  load() {
    const path = `${this.directory}/checkpoint`;
    let data;
    try {
      data = readFile(this._dir, 'checkpoint');
    } catch (e) {
      throw new PulsewatchError(`cannot read ${path}: ${fsWhy(e)}`);
    }
    if (data === null) return null;
    const first = data.indexOf(10);
    const second = first < 0 ? -1 : data.indexOf(10, first + 1);
    const text = (from, to) => new TextDecoder().decode(data.subarray(from, to));
    const invalid = (what) => new PulsewatchError(`${path} is not a pulsewatch checkpoint: ${what}`);
    if (first < 0 || text(0, first) !== MAGIC) throw invalid(`its first line is not "${MAGIC}"`);
    const seq = text(first + 1, second < 0 ? data.length : second);
    if (!/^[0-9]+$/.test(seq)) throw invalid('its second line is not a seq');
    if (second < 0) throw invalid("it ends before the plugin's state");
    return [Number(seq), data.subarray(second + 1)];
  }
  /** Replaces the checkpoint with `seq` and `state` (a Uint8Array or a string), durably. */
  commit(seq, state) {
    const header = encoder.encode(`${MAGIC}\n${seq}\n`);
    const body = bytesOf(state, 'the state');
    const bytes = new Uint8Array(header.length + body.length);
    bytes.set(header);
    bytes.set(body, header.length);
    try {
      const temp = this._dir.openAt({}, 'checkpoint.tmp', { create: true, truncate: true }, { write: true });
      writeAll(temp, bytes);
      temp.sync();
      this._dir.renameAt('checkpoint.tmp', this._dir, 'checkpoint');
    } catch (e) {
      throw new PulsewatchError(
        `cannot commit the checkpoint at seq ${seq} to ${this.directory}/checkpoint: ${fsWhy(e)}`,
      );
    }
    // Makes the rename itself durable, where the directory can be synced.
    try {
      this._dir.sync();
    } catch {
      // Not every filesystem lets a directory be synced.
    }
  }
}

/** A change-feed plugin, driven by `run`. Override `process` and `snapshot`, and `restore` when
 * it keeps state. */
export class Plugin {
  /** The plugin rebuilt from the state it last committed (a Uint8Array), or new (null). */
  static restore(_state) {
    return new this();
  }
  /** Processes one batch: an array of `EventRef`s, in seq order. */
  process(_batch) {
    throw new PulsewatchError('a plugin processes batches: define process(batch)');
  }
  /** The state (a Uint8Array or a string) to commit with the cursor after each batch. */
  snapshot() {
    return new Uint8Array();
  }
  /** Called when the events after `cursor` were deleted before the plugin read them; `oldest`
   * is the oldest one stored. Return to go on from there; the default throws, so nothing is
   * skipped unsaid. */
  truncated(cursor, oldest) {
    throw new PulsewatchError(
      `events ${cursor + 1}..${oldest - 1} are no longer in the log (deleted by retention, or ` +
        'lost to damage and left out by a salvage) and this plugin had not read them; to go on ' +
        `from seq ${oldest} without them, override truncated(cursor, oldest)`,
    );
  }
  /** Called once when the host closes the feed, after the last commit. */
  finish(_cursor) {}
}

/** Where a plugin without a checkpoint starts, as the host says. */
function startPosition() {
  const found = getEnvironment().find(([name]) => name === 'PULSEWATCH_START');
  const start = found ? found[1] : 'beginning';
  if (start === 'beginning') return 0;
  if (start === 'head') return ChangePoller.fromHead().lastSequence();
  if (/^time:[0-9]+$/.test(start)) return ChangePoller.fromTime(Number(start.slice(5))).lastSequence();
  if (/^[0-9]+$/.test(start)) {
    const seq = Number(start);
    const last = ChangePoller.fromHead().lastSequence();
    if (seq > last) {
      throw new PulsewatchError(
        `the start position, after seq ${seq}, is beyond the head, seq ${last}: events ` +
          `${last + 1}..${seq} would never be delivered; start at most at the head`,
      );
    }
    return seq;
  }
  throw new PulsewatchError(`PULSEWATCH_START=${start}: expected beginning, head, a seq or time:<ms>`);
}

/** Pauses the plugin for `ms` milliseconds, blocked on the clock. */
function pause(ms) {
  subscribeDuration(BigInt(ms) * 1_000_000n).block();
}

/** `attempt()`, tried again while `transient(error)` says why its error is worth another try
 * (null: it is not), with doubling pauses from 100 ms (3 s in all). The SDK's own, shared with
 * `pulsewatch/transform`; not part of the API. */
export function retrying(attempt, transient) {
  let ms = 100;
  for (let i = 0; i < RETRIES; i++) {
    try {
      return attempt();
    } catch (e) {
      const why = transient(e);
      if (why === null) throw e;
      console.error(`pulsewatch: ${why}; retrying in ${ms} ms`);
      pause(ms);
      ms *= 2;
    }
  }
  return attempt();
}

const feedUnavailable = (e) => (e instanceof Unavailable ? `feed unavailable (${e.why})` : null);

/** The loop of `run` and of `pulsewatch/transform`: from `start` (where the host says when
 * null), poll, `steps.process` each batch, `steps.commit` its cursor, and wait while caught up;
 * `steps.finish` once the host closes the feed. The SDK's own; not part of the API. */
export function drive(steps, start, batchLimit) {
  let poller = new ChangePoller(start === null ? startPosition() : start, batchLimit);
  for (;;) {
    let batch;
    try {
      batch = retrying(() => poller.pollBatch(), feedUnavailable);
    } catch (e) {
      if (!(e instanceof Truncated)) throw e;
      steps.truncated(poller.lastSequence(), e.oldest);
      poller = new ChangePoller(e.oldest - 1, batchLimit);
      continue;
    }
    if (batch.length === 0) {
      try {
        poller.wait();
      } catch (e) {
        if (e instanceof Closed) break;
        throw e;
      }
      continue;
    }
    steps.process(batch);
    steps.commit(poller.lastSequence());
  }
  steps.finish(poller.lastSequence());
}

/** Runs `PluginClass` over the feed until the host closes it: resume from the checkpoint, then
 * poll, process, commit, and wait while caught up. */
export function run(PluginClass, { checkpoint = new Checkpoint(), batchLimit = DEFAULT_BATCH_LIMIT } = {}) {
  const saved = checkpoint.load();
  const plugin = PluginClass.restore(saved ? saved[1] : null);
  const steps = {
    process: (batch) => plugin.process(batch),
    commit: (cursor) => checkpoint.commit(cursor, plugin.snapshot()),
    truncated: (cursor, oldest) => plugin.truncated(cursor, oldest),
    finish: (cursor) => plugin.finish(cursor),
  };
  drive(steps, saved ? saved[0] : null, batchLimit);
}

/** A `wasi:cli/run` export that calls `runner()`; an error ends the plugin with
 * `Error: <sentence>` on stderr and a failed exit status. The SDK's own; not part of the API. */
export function exported(runner) {
  return {
    run() {
      try {
        runner();
      } catch (e) {
        console.error(`Error: ${e instanceof Error ? e.message : String(e)}`);
        throw e;
      }
    },
  };
}

/** The `wasi:cli/run` export that runs `PluginClass`: `export const run = command(MyPlugin)`.
 * An error ends the plugin with `Error: <sentence>` on stderr and a failed exit status. */
export function command(PluginClass, options = {}) {
  return exported(() => run(PluginClass, options));
}

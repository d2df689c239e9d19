// TypeScript declarations of the pulsewatch plugin SDK (pulsewatch.js).

/** Events asked for in one poll: the seed's `ChangePoller` batch limit. */
export const DEFAULT_BATCH_LIMIT: 1000;
/** The directory the host preopens for the plugin, private to it. */
export const STATE_DIR: '/state';
/** The kinds of change, in the order of the WIT enum (`EventRef.kindIndex`). */
export const KINDS: readonly ['created', 'updated', 'archived', 'deleted'];
export type Kind = (typeof KINDS)[number];

/** An error of the SDK's, whose message is a sentence a plugin author can act on. */
export class PulsewatchError extends Error {}
/** The feed could not be read now; nothing was consumed: poll again later. */
export class Unavailable extends PulsewatchError {
  readonly why: string;
}
/** An event is stored but cannot be decoded; nothing after it is delivered. */
export class Undecodable extends PulsewatchError {
  readonly seq: number;
}
/** The events after the cursor are no longer stored; `oldest` is the next one that is. */
export class Truncated extends PulsewatchError {
  readonly oldest: number;
}
/** The host will deliver no more events in this run: commit and return. */
export class Closed extends PulsewatchError {}

/** One event of a `Batch`, read in place. Numbers are exact up to 2^53. */
export class EventRef {
  readonly seq: number;
  /** The kind as its place in `KINDS`. */
  readonly kindIndex: 0 | 1 | 2 | 3;
  readonly kind: Kind;
  /** The entity's UUID, as text. */
  readonly entity: string;
  /** The collective's UUID, as text. */
  readonly collective: string;
  /** A key for the collective, cheaper than its text: `collectiveOfKey` gives the text back,
   * `keyOfCollective` the key of a text. */
  readonly collectiveKey: string;
  /** When the writer recorded the change, in ms since the Unix epoch. */
  readonly timestampMs: number;
  /** The application's bytes: a view into the batch (`.slice()` copies). */
  readonly payload: Uint8Array;
}

/** The collective's UUID text of a key `EventRef.collectiveKey` gave. */
export function collectiveOfKey(key: string): string;
/** The key `EventRef.collectiveKey` gives for the collective whose UUID text is `uuid`. */
export function keyOfCollective(uuid: string): string;

/** The events of one poll, in seq order, read in place. */
export type Batch = EventRef[];

/** One event, read into a plain object. */
export interface Event {
  seq: number;
  kind: Kind;
  entity: string;
  collective: string;
  timestampMs: number;
  payload: Uint8Array;
}

/** A cursor over the feed: the seq of the last event polled (0 before the first). */
export class ChangePoller {
  constructor(lastSeq?: number | bigint, batchLimit?: number);
  static new(): ChangePoller;
  static fromSequence(seq: number | bigint): ChangePoller;
  static fromHead(): ChangePoller;
  static fromTime(timestampMs: number): ChangePoller;
  withBatchLimit(limit: number): this;
  lastSequence(): number;
  pollBatch(): Batch;
  poll(): Event[];
  /** True when events after the cursor arrived; throws `Closed` when no more will come. */
  wait(timeoutMs?: number): boolean;
}

/** The cursor and the plugin's state, in one file in /state, replaced atomically. */
export class Checkpoint {
  constructor(directory?: string);
  readonly directory: string;
  load(): [number, Uint8Array] | null;
  commit(seq: number, state: Uint8Array | string): void;
}

/** A change-feed plugin, driven by `run`. */
export class Plugin {
  /** The plugin rebuilt from the state it last committed, or new (null). */
  static restore(state: Uint8Array | null): Plugin;
  process(batch: Batch): void;
  snapshot(): Uint8Array | string;
  truncated(cursor: number, oldest: number): void;
  finish(cursor: number): void;
}

export interface RunOptions {
  checkpoint?: Checkpoint;
  batchLimit?: number;
}

/** Runs the plugin over the feed until the host closes it. */
export function run(plugin: { restore(state: Uint8Array | null): Plugin }, options?: RunOptions): void;

/** The `wasi:cli/run` export that runs the plugin: `export const run = command(MyPlugin)`. */
export function command(
  plugin: { restore(state: Uint8Array | null): Plugin },
  options?: RunOptions,
): { run(): void };

/** Reads the whole file `name` of a WASI directory descriptor, or null if there is none. */
export function readFile(dir: unknown, name: string): Uint8Array | null;
/** Writes all of `bytes` to a WASI file descriptor at `offset`. */
export function writeAll(file: unknown, bytes: Uint8Array, offset?: bigint): void;

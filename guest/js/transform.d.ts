// TypeScript declarations of the pulsewatch transform SDK (transform.js): plugins that derive
// events into output logs, exactly once with their cursor.

import { Plugin, PulsewatchError } from './pulsewatch.js';
import type { Batch, Kind } from './pulsewatch.js';

/** A commit did not happen: see `CommitInvalid` and `CommitUnavailable`. */
export class CommitError extends PulsewatchError {
  readonly why: string;
}
/** The commit breaks a rule of the contract (a bug in the plugin); nothing was written. */
export class CommitInvalid extends CommitError {}
/** An output log could not be written now; committing the same again completes it. */
export class CommitUnavailable extends CommitError {}

/** Where a transform resumes: what it last committed. */
export interface Committed {
  /** The seq of the last input event it had processed. */
  cursor: number;
  /** Its state as of `cursor`; null for its initial state. */
  state: Uint8Array | null;
}

/** Collects the events a transform derives, and commits them with its cursor and state. */
export class Emitter {
  /** The names of the granted outputs. */
  readonly names: string[];
  /** The granted output called `name`; throws naming the ones granted. */
  output(name: string): number;
  /** Derives an event from the input event `from` into `output`, written at the next commit. */
  emit(
    output: number,
    from: number | bigint,
    kind: Kind | 0 | 1 | 2 | 3,
    entity: string,
    collective: string,
    payload?: Uint8Array | string,
  ): void;
  /** How many events wait for the next commit. */
  pending(): number;
  /** Writes the pending events and moves the cursor, atomically and durably. */
  commit(cursor: number | bigint, state: Uint8Array | string): void;
  /** What the plugin last committed; null before its first commit. */
  static committed(): Committed | null;
}

/** A plugin that derives events into output logs, driven by `runTransform`. */
export class Transform extends Plugin {
  /** The transform rebuilt from the state it last committed, or new (null). */
  static restore(state: Uint8Array | null): Transform;
  process(batch: Batch, out?: Emitter): void;
}

/** Runs a transform over the feed until the host closes it. */
export function runTransform(
  TransformClass: { restore(state: Uint8Array | null): Transform },
  options?: { batchLimit?: number },
): void;

/** The `wasi:cli/run` export that runs a transform: `export const run = transform(T)`. */
export function transform(
  TransformClass: { restore(state: Uint8Array | null): Transform },
  options?: { batchLimit?: number },
): { run(): void };

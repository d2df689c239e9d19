// Counts changes per collective and kind, and prints the totals when the feed closes: the Rust
// example `kind-counts` in JavaScript, with the same output and the same checkpoint, byte for
// byte. The counts are committed with the cursor after every batch.

import { KINDS, Plugin, collectiveOfKey, command, keyOfCollective } from 'pulsewatch';

const line = (counts) => KINDS.map((kind, i) => `${kind}=${counts[i]}`).join(' ');

class KindCounts extends Plugin {
  constructor(byKey = new Map()) {
    super();
    // By the collective's key: cheaper per event than its UUID text.
    this.byKey = byKey;
  }

  static restore(state) {
    if (state === null) return new KindCounts();
    const saved = JSON.parse(new TextDecoder().decode(state)).per_collective;
    const byKey = new Map();
    for (const [collective, counts] of Object.entries(saved)) {
      byKey.set(keyOfCollective(collective), counts);
    }
    return new KindCounts(byKey);
  }

  process(batch) {
    for (const event of batch) {
      const key = event.collectiveKey;
      let counts = this.byKey.get(key);
      if (counts === undefined) {
        counts = [0, 0, 0, 0];
        this.byKey.set(key, counts);
      }
      counts[event.kindIndex] += 1;
    }
  }

  /** The counts by the collective's UUID text, in its order (as the state keeps them). */
  byName() {
    const named = [...this.byKey].map(([key, counts]) => [collectiveOfKey(key), counts]);
    return Object.fromEntries(named.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  snapshot() {
    return JSON.stringify({ per_collective: this.byName() });
  }

  finish(cursor) {
    const totals = [0, 0, 0, 0];
    for (const [collective, counts] of Object.entries(this.byName())) {
      console.log(`collective ${collective}: ${line(counts)}`);
      counts.forEach((n, i) => (totals[i] += n));
    }
    console.log(`totals: ${line(totals)}`);
    console.log(`cursor: ${cursor}`);
  }
}

export const run = command(KindCounts);

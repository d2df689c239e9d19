// Keeps running totals per tenant (collective) and derives one event per input event into the
// output log `totals`: the tenant's totals after that event, as JSON, with the tenant as both
// entity and collective. The Rust example `tenant-totals` in JavaScript: the same derived events
// and the same state, byte for byte, on payloads such as the examples' fixture's. JSON's edges
// are read as JavaScript reads them, not as serde does: `5.0` is an amount of 5 here and none
// in Rust, a one-element array is none here where serde takes it as one, a repeated key counts
// its last value, and amounts are exact up to 2^53.
//
// Exactly once: the derived events, the cursor and the totals are committed by the host in one
// step, so a crash at any moment neither loses nor repeats a tenant's update.

import { Transform, transform } from 'pulsewatch/transform';

const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The `amount_cents` a payload carries, if it is a JSON object with an integer one (0
 * otherwise, as the Rust example reads it). */
function amountCents(payload) {
  let value;
  try {
    value = JSON.parse(decoder.decode(payload));
  } catch {
    return 0;
  }
  const amount = value !== null && typeof value === 'object' && !Array.isArray(value) ? value.amount_cents : undefined;
  return Number.isSafeInteger(amount) ? amount : 0;
}

class TenantTotals extends Transform {
  constructor(tenants = new Map()) {
    super();
    // By the tenant's UUID text: [created, updated, archived, deleted, amount_cents].
    this.tenants = tenants;
  }

  static restore(state) {
    if (state === null) return new TenantTotals();
    const saved = JSON.parse(new TextDecoder().decode(state)).tenants;
    const tenants = new Map();
    for (const [key, t] of Object.entries(saved)) {
      // The state keys tenants by their UUID as a decimal u128, as the Rust example does.
      tenants.set(BigInt(key).toString(16).padStart(32, '0').replace(/(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-'), [...t.kinds, t.amount_cents]);
    }
    return new TenantTotals(tenants);
  }

  process(batch, out) {
    const totalsLog = out.output('totals');
    for (const event of batch) {
      const tenant = event.collective;
      let totals = this.tenants.get(tenant);
      if (totals === undefined) {
        totals = [0, 0, 0, 0, 0];
        this.tenants.set(tenant, totals);
      }
      totals[event.kindIndex] += 1;
      totals[4] += amountCents(event.payload);
      const [created, updated, archived, deleted, cents] = totals;
      const payload =
        `{"tenant":"${tenant}","created":${created},"updated":${updated},` +
        `"archived":${archived},"deleted":${deleted},"amount_cents":${cents}}`;
      out.emit(totalsLog, event.seq, 'updated', tenant, tenant, payload);
    }
  }

  snapshot() {
    // As serde writes the Rust example's BTreeMap<u128, _>: keys in numeric order, as decimal.
    const keyed = [...this.tenants].map(([tenant, t]) => [BigInt(`0x${tenant.replaceAll('-', '')}`), t]);
    keyed.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const tenants = keyed.map(([key, t]) => `"${key}":{"kinds":[${t.slice(0, 4)}],"amount_cents":${t[4]}}`);
    return `{"tenants":{${tenants.join(',')}}}`;
  }

  finish(cursor) {
    console.log(`tenant-totals: ${this.tenants.size} tenants, committed through seq ${cursor}`);
  }
}

export const run = transform(TenantTotals);

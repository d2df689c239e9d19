"""Keeps running totals per tenant (collective) and derives one event per input event into the
output log ``totals``: the tenant's totals after that event, as JSON, with the tenant as both
entity and collective. The Rust example ``tenant-totals`` in Python: the same derived events and
the same state, byte for byte, on payloads such as the examples' fixture's. JSON's edges are read
as Python reads them, not as serde does: a repeated key counts its last value, and a one-element
array is no amount here where serde takes it as one.

Exactly once: the derived events, the cursor and the totals are committed by the host in one
step, so a crash at any moment neither loses nor repeats a tenant's update."""

import json

import pulsewatch
import pulsewatch.transform

_I64 = range(-(1 << 63), 1 << 63)


def _not_json(constant):
    raise ValueError(f"{constant} is not JSON")


def amount_cents(payload):
    """The ``amount_cents`` a payload carries, if it is a JSON object with an integer one (0
    otherwise, as the Rust example reads it)."""
    try:
        value = json.loads(bytes(payload).decode(), parse_constant=_not_json)
    except ValueError:
        return 0
    amount = value.get("amount_cents") if isinstance(value, dict) else None
    # bool is an int in Python, not in JSON.
    return amount if type(amount) is int and amount in _I64 else 0


class TenantTotals(pulsewatch.transform.Transform):
    def __init__(self, tenants=None):
        # By the tenant's UUID as an integer: [created, updated, archived, deleted, amount_cents].
        self.tenants = tenants or {}

    @classmethod
    def restore(cls, state):
        if state is None:
            return cls()
        saved = json.loads(state)["tenants"]
        return cls({int(key): [*t["kinds"], t["amount_cents"]] for key, t in saved.items()})

    def process(self, batch, out):
        totals_log = out.output("totals")
        tenants = self.tenants
        for event in batch:
            tenant = event.collective_int
            totals = tenants.get(tenant)
            if totals is None:
                totals = tenants[tenant] = [0, 0, 0, 0, 0]
            totals[event.kind_index] += 1
            totals[4] += amount_cents(event.payload)
            created, updated, archived, deleted, cents = totals
            name = event.collective
            payload = (
                f'{{"tenant":"{name}","created":{created},"updated":{updated},'
                f'"archived":{archived},"deleted":{deleted},"amount_cents":{cents}}}'
            )
            out.emit(totals_log, event.seq, "updated", tenant, tenant, payload)

    def snapshot(self):
        # As serde writes the Rust example's BTreeMap<u128, _>: keys in numeric order, as text.
        tenants = {
            str(key): {"kinds": totals[:4], "amount_cents": totals[4]}
            for key, totals in sorted(self.tenants.items())
        }
        return json.dumps({"tenants": tenants}, separators=(",", ":")).encode()

    def finish(self, cursor):
        print(f"tenant-totals: {len(self.tenants)} tenants, committed through seq {cursor}")


Run = pulsewatch.transform.command(TenantTotals)

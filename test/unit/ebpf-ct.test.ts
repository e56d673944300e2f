// The agent's sweep of the per-packet connection tracking (src/dataplane/ebpf/ct.ts) on an
// in-memory map whose dump and live contents can differ, as the kernel's do while the programs
// run: an entry expired in the dump but taken over since by a new flow must survive.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sweepCt } from '../../src/dataplane/ebpf/ct.js';
import { CtKeyCodec, CtValCodec } from '../../src/dataplane/ebpf/codecs.js';
import { DEFAULT_CT_TIMEOUTS } from '../../src/dataplane/ebpf/defaults.js';
import type { MapIO } from '../../src/dataplane/ebpf/maps.js';

const S = 1_000_000_000n;
const NOW = 10_000n * S;

function entry(sport: number, dir: 0 | 1, proto: number, state: number, lastSeen: bigint): [string, Buffer] {
  const k = Buffer.alloc(CtKeyCodec.size);
  k.writeUInt16BE(sport, CtKeyCodec.offsets.sport);
  k[CtKeyCodec.offsets.proto] = proto;
  k[CtKeyCodec.offsets.dir] = dir;
  const v = Buffer.alloc(CtValCodec.size);
  v[CtValCodec.offsets.state] = state;
  v.writeBigUInt64LE(lastSeen, CtValCodec.offsets.last_seen_ns);
  return [k.toString('hex'), v];
}

/** A map whose batch dump returns `snapshot` while lookups and deletes see `live`. */
function racyMap(snapshot: Map<string, Buffer>, live: Map<string, Buffer>): MapIO & { deleted: string[] } {
  const deleted: string[] = [];
  return {
    deleted,
    lookupBatch(_fd, keys, values, max, _tok, each) {
      let i = 0;
      for (const [k, v] of snapshot) {
        if (i === max) break;
        Buffer.from(k, 'hex').copy(keys, i * CtKeyCodec.size);
        v.copy(values, i * CtValCodec.size);
        i++;
      }
      each(i);
      return true;
    },
    lookup(_fd, key, value) {
      const v = live.get(key.toString('hex'));
      if (v === undefined) return false;
      v.copy(value);
      return true;
    },
    delete(_fd, key) {
      deleted.push(key.toString('hex'));
      return live.delete(key.toString('hex'));
    },
    update() { throw new Error('the sweep writes nothing'); },
    nextKey() { return false; },
    updateBatch() { throw new Error('the sweep writes nothing'); },
    deleteBatch() { throw new Error('the sweep deletes one re-read entry at a time'); },
  };
}

test('the sweep deletes what is still expired, keeps what a new flow took over since the dump, and counts by state', () => {
  const old = NOW - 100n * S;
  const stale = [entry(1, 0, 6, 2, old), entry(2, 1, 6, 2, old), entry(3, 0, 17, 1, old), entry(4, 0, 6, 1, NOW - S), entry(5, 1, 6, 0, NOW)];
  const snapshot = new Map<string, Buffer>(stale);
  const live = new Map<string, Buffer>(stale.map(([k, v]) => [k, Buffer.from(v)]));
  // Port 2's expired reservation was taken over by a new flow after the dump.
  live.set(stale[1]![0], entry(2, 1, 6, 0, NOW)[1]);
  const io = racyMap(snapshot, live);
  const s = sweepCt(1, 1000, DEFAULT_CT_TIMEOUTS, NOW, io);
  assert.deepEqual(io.deleted.sort(), [stale[0]![0], stale[2]![0]].sort(), 'a closed TCP flow (10 s) and a quiet UDP one (60 s) go');
  assert.ok(live.has(stale[1]![0]), 'the entry a new flow took over stays');
  // Counted: the taken-over entry by its dump state (closing), port 4 established, port 5 SYN.
  assert.deepEqual(s, { syn: 1, established: 1, closing: 1, deleted: 2, capacity: 1000 });
});

// Garbage collection and accounting of the per-packet path's connection tracking (rd_ct, an LRU
// map the tc programs write; bpf/lib/ct.h). The programs treat an expired entry as absent and
// take over expired SNAT reservations, so nothing depends on this for correctness; the sweep
// keeps the map's fill level honest (so "nearly full" means live flows, which the LRU would
// otherwise evict), and counts entries by state for the metrics.

import { CtKeyCodec, CtValCodec } from './codecs.js';
import type { CtTimeouts } from './defaults.js';
import { dumpRaw, type MapIO } from './maps.js';

export interface CtStats {
  /** Live entries (two per flow) by state after the sweep. */
  syn: number;
  established: number;
  closing: number;
  /** Entries the sweep deleted (expired). */
  deleted: number;
  capacity: number;
}

const STATES = ['syn', 'established', 'closing'] as const;

/**
 * Dumps rd_ct, deletes expired entries, and counts the rest. `nowNs` is the programs'
 * clock (CLOCK_MONOTONIC, as bpf_ktime_get_ns; process.hrtime.bigint() reads the same clock).
 * Throws DataPlaneError EREAD or EAPPLY.
 */
export function sweepCt(fd: number, capacity: number, timeouts: CtTimeouts, nowNs: bigint, io: MapIO): CtStats {
  const { keys, values, count } = dumpRaw(fd, 'rd_ct', CtKeyCodec.size, CtValCodec.size, io);
  const out: CtStats = { syn: 0, established: 0, closing: 0, deleted: 0, capacity };
  const limit = (proto: number, state: number): bigint => {
    const s = proto !== 6 ? timeouts.udp : state === 0 ? timeouts.tcpSyn : state === 1 ? timeouts.tcpEstablished : timeouts.tcpClosing;
    return BigInt(s) * 1_000_000_000n;
  };
  const expired = (v: Buffer, vo: number, proto: number): boolean => {
    const last = v.readBigUInt64LE(vo + CtValCodec.offsets.last_seen_ns);
    // A flow seen after `nowNs` was read is live.
    return nowNs > last && nowNs - last > limit(proto, v[vo + CtValCodec.offsets.state]!);
  };
  const key = Buffer.alloc(CtKeyCodec.size);
  const val = Buffer.alloc(CtValCodec.size);
  for (let i = 0; i < count; i++) {
    const ko = i * CtKeyCodec.size;
    const vo = i * CtValCodec.size;
    const proto = keys[ko + CtKeyCodec.offsets.proto]!;
    if (expired(values, vo, proto)) {
      keys.copy(key, 0, ko, ko + CtKeyCodec.size);
      // Read again right before deleting: since the dump, a new flow on the same tuple may have
      // taken the expired entry over (a client reusing its port, an SNAT reservation), and a
      // batch delete from the dump would break it.
      if (!io.lookup(fd, key, val, 'rd_ct') || expired(val, 0, proto)) {
        if (io.delete(fd, key, 'rd_ct')) out.deleted++;
        continue;
      }
    }
    out[STATES[Math.min(values[vo + CtValCodec.offsets.state]!, 2)]!]++;
  }
  return out;
}

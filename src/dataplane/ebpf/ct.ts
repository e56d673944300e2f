// Garbage collection and accounting of the per-packet path's connection tracking (rd_ct, an LRU
// map the tc programs write; bpf/lib/ct.h). The programs treat an expired entry as absent and
// take over expired SNAT reservations, so nothing depends on this for correctness; the sweep
// keeps the map's fill level honest (so "nearly full" means live flows, which the LRU would
// otherwise evict), and counts entries by state for the metrics.
//
// The sweep is rd_ct_gc (tc_nodeport.c), run with BPF_PROG_TEST_RUN: it walks the map in the
// kernel, deleting each expired entry as it checks it, so a flow that took an expired tuple over
// is never deleted, and one call does what a dump and a delete per entry did from here.

import { progTestRun } from './libbpf.js';

export interface CtStats {
  /** Live entries (two per flow) by state after the sweep. */
  syn: number;
  established: number;
  closing: number;
  /** Entries the sweep deleted (expired). */
  deleted: number;
  capacity: number;
}

/** The smallest frame a tc test run takes (an Ethernet header); rd_ct_gc does not read it. */
const FRAME = Buffer.alloc(14);
/** struct __sk_buff (192 bytes); rd_ct_gc answers in cb[0..3], at offset 48. */
const SKB_SIZE = 192;
const CB = 48;

/** Runs rd_ct_gc once (`progFd`: the loaded program). Throws DataPlaneError EREAD. */
export function sweepCt(progFd: number, capacity: number): CtStats {
  const r = progTestRun(progFd, FRAME, Buffer.alloc(SKB_SIZE), 'rd_ct_gc');
  const cb = r.ctx!;
  return {
    deleted: cb.readUInt32LE(CB),
    syn: cb.readUInt32LE(CB + 4),
    established: cb.readUInt32LE(CB + 8),
    closing: cb.readUInt32LE(CB + 12),
    capacity,
  };
}

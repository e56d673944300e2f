// The socket load balancer's maps read back into typed frontends: what `rudder services` shows,
// what a restarted agent adopts, and what a reconcile compares with the table.

import { bpfMap } from './libbpf.js';
import { BackendCodec, SCOPE_EXT, SrcRangeKeyCodec, SvcKeyCodec, SvcValCodec, type Backend, type SvcKey } from './codecs.js';
import { dump, type MapFds, type MapIO } from './maps.js';

export interface KernelFrontend {
  scope: number;
  addr: string;
  port: number;
  proto: number;
  id: number;
  flags: number;
  affinityTimeout: number;
  /** Slot i+1's backend id (0 where a slot is missing). */
  backendIds: number[];
  /** Source ranges of this frontend id, sorted. */
  ranges: string[];
}

export interface KernelState {
  frontends: KernelFrontend[];
  backends: Map<number, Backend>;
  /** Slot entries no master accounts for (a write interrupted half way). */
  orphanSlots: SvcKey[];
  /** ClusterIPs whose other ports are refused (the port 0, protocol 0 entries). */
  clusterIPs: Set<string>;
}

const feKey = (k: SvcKey): string => `${k.addr}|${k.port}|${k.proto}|${k.scope}`;

/** Dumps rd_services, rd_backends and rd_src_ranges. Throws DataPlaneError EREAD. */
export function readKernel(fds: MapFds, io: MapIO = bpfMap): KernelState {
  const entries = dump(fds.rd_services, 'rd_services', SvcKeyCodec.size, SvcValCodec.size, (b) => SvcKeyCodec.decode(b), (b) => SvcValCodec.decode(b), io);
  const backends = new Map(dump(fds.rd_backends, 'rd_backends', 4, BackendCodec.size, (b) => b.readUInt32LE(0), (b) => BackendCodec.decode(b), io));
  const ranges = new Map<number, string[]>();
  for (const [k] of dump(fds.rd_src_ranges, 'rd_src_ranges', SrcRangeKeyCodec.size, 1, (b) => SrcRangeKeyCodec.decode(b), () => 0, io)) {
    const l = ranges.get(k.revNatId);
    if (l === undefined) ranges.set(k.revNatId, [k.cidr]);
    else l.push(k.cidr);
  }
  const masters = new Map<string, KernelFrontend>();
  const clusterIPs = new Set<string>();
  for (const [k, v] of entries) {
    // SCOPE_EXT belongs to the per-packet path.
    if (k.slot !== 0 || k.scope === SCOPE_EXT) continue;
    if (k.port === 0 && k.proto === 0) {
      clusterIPs.add(k.addr);
      continue;
    }
    masters.set(feKey(k), { scope: k.scope, addr: k.addr, port: k.port, proto: k.proto, id: v.revNatId, flags: v.flags, affinityTimeout: v.affinityTimeout, backendIds: new Array<number>(v.count).fill(0), ranges: (ranges.get(v.revNatId) ?? []).sort() });
  }
  const orphanSlots: SvcKey[] = [];
  for (const [k, v] of entries) {
    if (k.slot === 0 || k.scope === SCOPE_EXT) continue;
    const m = masters.get(feKey(k));
    if (m === undefined || k.slot > m.backendIds.length) orphanSlots.push(k);
    else m.backendIds[k.slot - 1] = v.backendId;
  }
  return { frontends: [...masters.values()], backends, orphanSlots, clusterIPs };
}

/** Per-CPU counters of one id summed over CPUs (values are u64 fields back to back). */
export function readPerCpu(fd: number, id: number, fields: number, cpus: number, buf: Buffer): bigint[] {
  const key = Buffer.alloc(4);
  key.writeUInt32LE(id);
  const sums = new Array<bigint>(fields).fill(0n);
  if (!bpfMap.lookup(fd, key, buf, 'per-CPU counters')) return sums;
  const stride = fields * 8;
  for (let c = 0; c < cpus; c++) for (let f = 0; f < fields; f++) sums[f]! += buf.readBigUInt64LE(c * stride + f * 8);
  return sums;
}

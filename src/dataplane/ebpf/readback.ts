// The socket load balancer's maps read back into typed frontends: what `rudder services` shows,
// what a restarted agent adopts, and what a reconcile compares with the table.

import { bpfMap } from './libbpf.js';
import { BackendCodec, SrcRangeKeyCodec, SvcKeyCodec, SvcValCodec, type Backend, type SvcKey } from './codecs.js';
import { dump, dumpRaw, type MapFds, type MapIO } from './maps.js';

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

/**
 * Dumps rd_services, rd_backends and rd_src_ranges. Only masters are decoded: a slot is matched
 * to its master by the frontend id it carries and the raw bytes of its key, so a read-back of
 * 10,000 frontends does not build 40,000 objects. Throws DataPlaneError EREAD.
 */
export function readKernel(fds: MapFds, io: MapIO = bpfMap): KernelState {
  const svc = dumpRaw(fds.rd_services, 'rd_services', SvcKeyCodec.size, SvcValCodec.size, io);
  const backends = new Map(dump(fds.rd_backends, 'rd_backends', 4, BackendCodec.size, (b) => b.readUInt32LE(0), (b) => BackendCodec.decode(b), io));
  const ranges = new Map<number, string[]>();
  for (const [k] of dump(fds.rd_src_ranges, 'rd_src_ranges', SrcRangeKeyCodec.size, 1, (b) => SrcRangeKeyCodec.decode(b), () => 0, io)) {
    const l = ranges.get(k.revNatId);
    if (l === undefined) ranges.set(k.revNatId, [k.cidr]);
    else l.push(k.cidr);
  }
  const KS = SvcKeyCodec.size;
  const VS = SvcValCodec.size;
  const { keys, values, count } = svc;
  // Masters by (id, scope): a slot names its frontend's id in its value.
  const masters = new Map<number, { fe: KernelFrontend; off: number }>();
  const clusterIPs = new Set<string>();
  for (let i = 0; i < count; i++) {
    const off = i * KS;
    const scope = keys[off + 21]!;
    if (keys.readUInt16LE(off + 18) !== 0) continue;
    const k = SvcKeyCodec.decode(keys, off);
    if (k.port === 0 && k.proto === 0) {
      clusterIPs.add(k.addr);
      continue;
    }
    const v = SvcValCodec.decode(values, i * VS);
    const fe: KernelFrontend = { scope, addr: k.addr, port: k.port, proto: k.proto, id: v.revNatId, flags: v.flags, affinityTimeout: v.affinityTimeout, backendIds: new Array<number>(v.count).fill(0), ranges: (ranges.get(v.revNatId) ?? []).sort() };
    masters.set(v.revNatId * 4 + scope, { fe, off });
  }
  const orphanSlots: SvcKey[] = [];
  for (let i = 0; i < count; i++) {
    const off = i * KS;
    const slot = keys.readUInt16LE(off + 18);
    const scope = keys[off + 21]!;
    if (slot === 0) continue;
    const m = masters.get(values.readUInt32LE(i * VS + 8) * 4 + scope);
    // The same address, port and protocol as the master (bytes 0-17 and 20), and a slot it counts.
    if (m === undefined || slot > m.fe.backendIds.length || keys.compare(keys, m.off, m.off + 18, off, off + 18) !== 0 || keys[off + 20] !== keys[m.off + 20]) {
      orphanSlots.push(SvcKeyCodec.decode(keys, off));
    } else {
      m.fe.backendIds[slot - 1] = values.readUInt32LE(i * VS);
    }
  }
  return { frontends: [...masters.values()].map((m) => m.fe), backends, orphanSlots, clusterIPs };
}

const perCpuKey = Buffer.alloc(4);

/** Per-CPU counters of one id summed over CPUs (values are u64 fields back to back); `buf` holds every CPU's value. */
export function readPerCpu(fd: number, id: number, fields: number, cpus: number, buf: Buffer): bigint[] {
  const key = perCpuKey;
  key.writeUInt32LE(id);
  const sums = new Array<bigint>(fields).fill(0n);
  if (!bpfMap.lookup(fd, key, buf, 'per-CPU counters')) return sums;
  const stride = fields * 8;
  for (let c = 0; c < cpus; c++) for (let f = 0; f < fields; f++) sums[f]! += buf.readBigUInt64LE(c * stride + f * 8);
  return sums;
}

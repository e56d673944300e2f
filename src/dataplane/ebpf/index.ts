// The eBPF data plane, socket half: cgroup connect4/6, sendmsg4/6, recvmsg4/6 and getpeername4/6
// programs (bpf/sock_lb.c) translate every connection that starts in a process inside the
// attached cgroup (pods and the node's own processes) to a backend at connect()/sendmsg() time, so
// no packet of it is NATed or seen by nf_conntrack. The model's frontend records decide
// everything; this file only turns the path a local process gets (`fromPod`) into map entries.
//
// Maps (bpf/lib/maps.h; codecs.ts documents each struct):
//   rd_services  (frontend address, port, protocol, scope, slot) -> slot 0: count, flags, id,
//                affinity timeout; slots 1..count: backend ids. Socket LB writes SCOPE_INT.
//   rd_backends  backend id -> address, port, protocol
//   rd_rev_nat   frontend id -> address, port (reverse translation; counters and metrics key)
//   rd_aff_match (frontend id, backend id) while the backend serves the frontend (affinity)
//   rd_src_ranges LPM (frontend id, source CIDR) for loadBalancerSourceRanges
//   rd_maglev    frontend id -> Maglev table, for frontends using Maglev
//
// Map writes are not one transaction. They are ordered so every intermediate state is valid: new
// backends, then a frontend's slots, then its master (count); on removal the master first, then
// its slots, then backends nobody uses. A frontend whose backends change is never seen with a
// count pointing past its written slots. A failed write throws DataPlaneError EAPPLY; the next
// sync is full, which re-reads the maps and rewrites whatever differs from the table.
//
// Full syncs (startup, periodic, after a failure) reconcile against read-back: the maps are
// dumped, what matches the table is left alone, the rest is written or deleted. That is how a
// restarted agent adopts the previous one's state without touching a working entry, and how a
// map entry deleted behind the agent's back is restored. Besides, the plane re-reads the maps at
// most every `reconcileIntervalMs` on an otherwise idle sync, so drift is repaired within one
// sync period and not only at the hourly full sync.

import type { Change, ProxyConfig, ServicePort, ServiceTable } from '../../model/types.js';
import { allPorts, beforeAfter } from '../../model/types.js';
import { frontendRecords, outranks, type FrontendRecord } from '../../model/frontends.js';
import { nodePortAddresses, primaryNodeIP } from '../../model/nodeport-addresses.js';
import type { Logger } from '../../observe/log.js';
import { DataPlaneError, type ApplyOptions, type ApplyResult, type DataPlane, type ProgrammedFrontend } from '../dataplane.js';
import { IPPROTO, SCOPE_INT, SVC_F, protoName, type SvcKey, type SvcVal } from './codecs.js';
import { IdAllocator } from './ids.js';
import { libbpfAvailable, netnsCookie } from './libbpf.js';
import { checkMaglevTableSize, maglevTable } from './maglev.js';
import { SyncWrites, writeConfig } from './maps.js';
import { cgroup2Root, DEFAULT_MAP_SIZES, DEFAULT_PIN_PATH, loadSocketLB, removePins, type MapSizes, type SocketLB } from './programs.js';
import { readKernel, type KernelFrontend } from './readback.js';
import { StaleUdp } from './stale-udp.js';

export type LbAlgorithm = 'random' | 'maglev';

export interface EbpfDataPlaneOptions {
  config: ProxyConfig | (() => ProxyConfig);
  logger: Logger;
  /** The cgroup whose processes are served (default: the cgroup v2 root). */
  cgroupPath?: string;
  /** bpffs directory for pinned maps and links (default /sys/fs/bpf/rudder). */
  pinPath?: string;
  /** Leave pods' sockets alone (only the host namespace is translated at connect()). */
  hostNamespaceOnly?: boolean;
  /** Default backend selection; a service may override it with the annotation. */
  lbAlgorithm?: LbAlgorithm;
  sizes?: Partial<MapSizes>;
  /** Re-read the maps on an idle sync at most this often (ms); default 30 s. */
  reconcileIntervalMs?: number;
  now?: () => number;
}

/** What one frontend is, as the maps hold it (or must hold it). */
interface Programmed {
  id: number;
  addr: string;
  port: number;
  proto: number;
  flags: number;
  affinityTimeout: number;
  /** Backend keys in slot order. */
  backends: string[];
  ranges: readonly string[];
  /** The record this came from (undefined for what was read back from the kernel). */
  rec?: FrontendRecord;
}

const LOOPBACK = { 4: '127.0.0.1', 6: '::1' } as const;

function backendKey(ip: string, port: number, proto: number): string {
  return `${ip}|${port}|${proto}`;
}

function splitBackendKey(key: string): { ip: string; port: number; proto: number } {
  const [ip, port, proto] = key.split('|');
  return { ip: ip!, port: Number(port), proto: Number(proto) };
}

const endpointIndex = new WeakMap<ServicePort, Map<string, { ip: string; port: number }>>();

function endpointsById(sp: ServicePort): Map<string, { ip: string; port: number }> {
  let m = endpointIndex.get(sp);
  if (m === undefined) {
    m = new Map(sp.endpoints.map((e) => [e.id, { ip: e.ip, port: e.port }]));
    endpointIndex.set(sp, m);
  }
  return m;
}

function sameProgrammed(a: Programmed, b: Programmed): boolean {
  return a.id === b.id && a.flags === b.flags && a.affinityTimeout === b.affinityTimeout
    && a.backends.length === b.backends.length && a.backends.every((x, i) => x === b.backends[i])
    && a.ranges.length === b.ranges.length && a.ranges.every((x, i) => x === b.ranges[i]);
}

export class EbpfDataPlane implements DataPlane {
  readonly name = 'ebpf' as const;
  private readonly logger: Logger;
  private readonly config: () => ProxyConfig;
  private readonly pinPath: string;
  private readonly sizes: MapSizes;
  private readonly reconcileIntervalMs: number;
  private readonly now: () => number;
  private lb: SocketLB | undefined;
  private stale: StaleUdp | undefined;
  /** The cgroup the hooks are attached to (known after init). */
  cgroupPath = '';
  /** Frontend key -> every service port record claiming it (the best one is programmed). */
  private readonly claims = new Map<string, Map<string, FrontendRecord>>();
  /** Frontend key -> what the maps hold. */
  private readonly kernel = new Map<string, Programmed>();
  /** ClusterIP -> service ports claiming it: while any does, its other ports are refused. */
  private readonly clusterIPClaims = new Map<string, number>();
  /** ClusterIPs whose catch-all entry the maps hold. */
  private readonly kernelClusterIPs = new Set<string>();
  /** Backend key -> frontends using it. */
  private readonly backendRefs = new Map<string, number>();
  private readonly frontendIds: IdAllocator;
  private readonly backendIds: IdAllocator;
  private nodePortAddrs: readonly string[] = [];
  private lastReconcile = -Infinity;
  private configKey = '';

  constructor(private readonly opts: EbpfDataPlaneOptions) {
    this.logger = opts.logger.child({ dataplane: 'ebpf' });
    const c = opts.config;
    this.config = typeof c === 'function' ? c : () => c;
    this.pinPath = opts.pinPath ?? DEFAULT_PIN_PATH;
    this.sizes = { ...DEFAULT_MAP_SIZES, ...opts.sizes };
    checkMaglevTableSize(this.sizes.maglevTableSize);
    this.reconcileIntervalMs = opts.reconcileIntervalMs ?? 30_000;
    this.now = opts.now ?? Date.now;
    this.frontendIds = new IdAllocator('frontend', 262143);
    this.backendIds = new IdAllocator('backend', this.sizes.backends - 1);
  }

  /**
   * Loads and attaches the programs (adopting pinned state). Throws DataPlaneError EUNSUPPORTED
   * when the kernel or libbpf cannot run them, EINIT otherwise.
   */
  async init(): Promise<void> {
    if (this.lb !== undefined) return;
    const why = libbpfAvailable();
    if (why !== null) throw new DataPlaneError('EUNSUPPORTED', why);
    if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new DataPlaneError('EUNSUPPORTED', 'the eBPF data plane needs a little-endian host');
    const root = cgroup2Root();
    const cg = this.opts.cgroupPath ?? root;
    if (cg === null || cg === undefined) throw new DataPlaneError('EUNSUPPORTED', 'no cgroup v2 mount in /proc/self/mountinfo: socket load balancing attaches to a cgroup v2');
    this.cgroupPath = cg;
    this.lb = loadSocketLB({
      pinPath: this.pinPath,
      cgroupPath: cg,
      sizes: this.sizes,
      logger: this.logger,
      knobs: { hostNetnsCookie: netnsCookie(), hostNamespaceOnly: this.opts.hostNamespaceOnly ?? false, maglevTableSize: this.sizes.maglevTableSize },
    });
    this.stale = new StaleUdp(cg, this.logger);
    this.logger.info('eBPF socket load balancer attached', { cgroup: cg, pins: this.pinPath, hooksAdopted: this.lb.adopted, lbAlgorithm: this.opts.lbAlgorithm ?? 'random', hostNamespaceOnly: this.opts.hostNamespaceOnly ?? false });
  }

  async apply(changes: readonly Change[], table: ServiceTable, opts: ApplyOptions): Promise<ApplyResult> {
    if (this.lb === undefined) await this.init();
    const lb = this.lb!;
    const cfg = this.config();
    // Localhost NodePorts: the node's own processes reach NodePorts on 127.0.0.1 and ::1 too
    // (the programs serve those addresses only to the host namespace).
    const addrs = [...nodePortAddresses(cfg), LOOPBACK[4], LOOPBACK[6]];
    const cfgKey = JSON.stringify([addrs, primaryNodeIP(cfg, 4), primaryNodeIP(cfg, 6)]);
    const reconcile = opts.full || cfgKey !== this.configKey || this.now() - this.lastReconcile >= this.reconcileIntervalMs;
    this.nodePortAddrs = addrs;
    try {
      const dirty = new Set<string>();
      if (reconcile) {
        this.readBack();
        this.claims.clear();
        this.clusterIPClaims.clear();
        for (const sp of allPorts(table)) this.claim(sp, cfg, dirty);
        for (const k of this.kernel.keys()) dirty.add(k);
        if (cfgKey !== this.configKey) writeConfig(lb.fds.rd_config_map, primaryNodeIP(cfg, 4), primaryNodeIP(cfg, 6));
      } else {
        for (const c of changes) {
          const { prev, next } = beforeAfter(c);
          if (prev !== undefined) this.unclaim(prev, dirty);
          if (next !== undefined) this.claim(next, cfg, dirty);
        }
      }
      const w = new SyncWrites(lb.fds);
      const gone: string[] = [];
      for (const key of dirty) this.reconcileFrontend(key, w, gone);
      this.reconcileClusterIPs(reconcile, w);
      const written = w.flush();
      if (reconcile) {
        this.lastReconcile = this.now();
        this.configKey = cfgKey;
      }
      await this.destroyStale(gone);
      return { written, bytes: 0 };
    } catch (e) {
      // What the maps hold is no longer known: the next sync re-reads them.
      this.lastReconcile = -Infinity;
      throw e instanceof DataPlaneError ? e : new DataPlaneError('EAPPLY', (e as Error).message);
    }
  }

  private algorithm(sp: ServicePort): LbAlgorithm {
    const own = (sp as { lbAlgorithm?: LbAlgorithm | '' }).lbAlgorithm;
    return own !== undefined && own !== '' ? own : this.opts.lbAlgorithm ?? 'random';
  }

  private records(sp: ServicePort, cfg: ProxyConfig): FrontendRecord[] {
    const recs = [...frontendRecords(sp, cfg, this.nodePortAddrs)];
    return recs.filter((r) => r.protocol !== 'SCTP');
  }

  private claim(sp: ServicePort, cfg: ProxyConfig, dirty: Set<string>): void {
    this.clusterIPClaims.set(sp.clusterIP, (this.clusterIPClaims.get(sp.clusterIP) ?? 0) + 1);
    this.dirtyClusterIPs.add(sp.clusterIP);
    for (const r of this.records(sp, cfg)) {
      let c = this.claims.get(r.key);
      if (c === undefined) this.claims.set(r.key, (c = new Map()));
      c.set(sp.id, r);
      dirty.add(r.key);
    }
  }

  private unclaim(sp: ServicePort, dirty: Set<string>): void {
    const n = (this.clusterIPClaims.get(sp.clusterIP) ?? 1) - 1;
    if (n > 0) this.clusterIPClaims.set(sp.clusterIP, n);
    else this.clusterIPClaims.delete(sp.clusterIP);
    this.dirtyClusterIPs.add(sp.clusterIP);
    // The records of `prev` were computed with the addresses of their time: drop every claim of
    // this port id, wherever it is.
    for (const r of frontendRecords(sp, this.config(), this.nodePortAddrs)) {
      this.claims.get(r.key)?.delete(sp.id);
      dirty.add(r.key);
    }
  }

  private readonly dirtyClusterIPs = new Set<string>();

  /** Writes or deletes the catch-all entries of the ClusterIPs that changed (all of them on a reconcile). */
  private reconcileClusterIPs(all: boolean, w: SyncWrites): void {
    const ips = all ? new Set([...this.clusterIPClaims.keys(), ...this.kernelClusterIPs]) : this.dirtyClusterIPs;
    for (const ip of ips) {
      const key: SvcKey = { addr: ip, port: 0, slot: 0, proto: 0, scope: SCOPE_INT };
      const want = this.clusterIPClaims.has(ip);
      if (want && !this.kernelClusterIPs.has(ip)) {
        w.master(key, { backendId: 0, count: 0, flags: SVC_F.REJECT, revNatId: 0, affinityTimeout: 0 });
        this.kernelClusterIPs.add(ip);
      } else if (!want && this.kernelClusterIPs.has(ip)) {
        w.delMasters.add((k, o) => SvcKeyCodecEncode(key, k, o));
        this.kernelClusterIPs.delete(ip);
      }
    }
    this.dirtyClusterIPs.clear();
  }

  private winner(key: string): FrontendRecord | undefined {
    const c = this.claims.get(key);
    if (c === undefined) return undefined;
    let best: FrontendRecord | undefined;
    for (const r of c.values()) if (best === undefined || outranks(r, best)) best = r;
    if (c.size === 0) this.claims.delete(key);
    return best;
  }

  private desired(rec: FrontendRecord, id: number): Programmed {
    const path = rec.fromPod;
    const sp = rec.service;
    const proto = IPPROTO[rec.protocol];
    let flags = 0;
    let backends: string[] = [];
    if (path.verdict === 'reject') flags |= SVC_F.REJECT;
    else if (path.verdict === 'drop') flags |= SVC_F.DROP;
    else {
      const eps = endpointsById(sp);
      backends = path.endpoints.map((eid) => {
        const e = eps.get(eid)!;
        return backendKey(e.ip, e.port, proto);
      });
    }
    if (rec.affinityTimeoutSeconds > 0) flags |= SVC_F.AFFINITY;
    if (rec.sourceRanges.length > 0) flags |= SVC_F.SRC_RANGE;
    if (rec.primaryNodeIPInRanges) flags |= SVC_F.SRC_NODE_OK;
    if (rec.kind === 'nodePort') flags |= SVC_F.NODEPORT;
    if (rec.ip === LOOPBACK[4] || rec.ip === LOOPBACK[6]) flags |= SVC_F.LOOPBACK;
    if (this.algorithm(sp) === 'maglev' && backends.length > 0) flags |= SVC_F.MAGLEV;
    return { id, addr: rec.ip, port: rec.port, proto, flags, affinityTimeout: rec.affinityTimeoutSeconds, backends, ranges: [...rec.sourceRanges].sort(), rec };
  }

  /** Brings one frontend's entries from what the kernel holds to what the table wants. */
  private reconcileFrontend(key: string, w: SyncWrites, gone: string[]): void {
    const rec = this.winner(key);
    const have = this.kernel.get(key);
    if (rec === undefined) {
      if (have !== undefined) this.remove(key, have, w, gone);
      return;
    }
    const id = this.frontendIds.acquire(key);
    const want = this.desired(rec, id);
    if (have !== undefined && sameProgrammed(have, want)) {
      have.rec = rec;
      return;
    }
    const masterKey: SvcKey = { addr: want.addr, port: want.port, slot: 0, proto: want.proto, scope: SCOPE_INT };
    for (const b of want.backends) this.refBackend(b, w);
    want.backends.forEach((b, i) => {
      w.slot({ ...masterKey, slot: i + 1 }, { backendId: this.backendIds.get(b)!, count: 0, flags: 0, revNatId: id, affinityTimeout: 0 });
    });
    const master: SvcVal = { backendId: 0, count: want.backends.length, flags: want.flags, revNatId: id, affinityTimeout: want.affinityTimeout };
    w.master(masterKey, master);
    if (have === undefined || have.id !== id) w.revNatEntry(id, { addr: want.addr, port: want.port });
    this.syncAffinity(have, want, w);
    this.syncRanges(have, want, w);
    if (want.flags & SVC_F.MAGLEV) {
      w.maglev.push({ id, table: maglevTable(want.backends.map((b) => ({ key: b, id: this.backendIds.get(b)! })), this.sizes.maglevTableSize) });
    } else if (have !== undefined && have.flags & SVC_F.MAGLEV) {
      w.delMaglev.add((k, o) => k.writeUInt32LE(id, o));
    }
    if (have !== undefined) {
      for (let slot = want.backends.length + 1; slot <= have.backends.length; slot++) {
        w.delSlots.add((k, o) => SvcKeyCodecEncode({ ...masterKey, slot }, k, o));
      }
      this.unrefBackends(have.backends, want.backends, w, gone);
    }
    this.kernel.set(key, want);
  }

  private remove(key: string, have: Programmed, w: SyncWrites, gone: string[]): void {
    const masterKey: SvcKey = { addr: have.addr, port: have.port, slot: 0, proto: have.proto, scope: SCOPE_INT };
    w.delMasters.add((k, o) => SvcKeyCodecEncode(masterKey, k, o));
    for (let slot = 1; slot <= have.backends.length; slot++) w.delSlots.add((k, o) => SvcKeyCodecEncode({ ...masterKey, slot }, k, o));
    w.delRevNat.add((k, o) => k.writeUInt32LE(have.id, o));
    if (have.flags & SVC_F.MAGLEV) w.delMaglev.add((k, o) => k.writeUInt32LE(have.id, o));
    this.syncAffinity(have, undefined, w);
    this.syncRanges(have, undefined, w);
    this.unrefBackends(have.backends, [], w, gone);
    this.kernel.delete(key);
    this.frontendIds.release(key);
  }

  private refBackend(b: string, w: SyncWrites): void {
    const n = this.backendRefs.get(b) ?? 0;
    if (n === 0 && this.backendIds.get(b) === undefined) {
      const id = this.backendIds.acquire(b);
      const { ip, port, proto } = splitBackendKey(b);
      w.backend(id, { addr: ip, port, proto, flags: 0 });
    }
    this.backendRefs.set(b, n + 1);
  }

  private unrefBackends(old: readonly string[], keep: readonly string[], w: SyncWrites, gone: string[]): void {
    for (const b of old) {
      const n = (this.backendRefs.get(b) ?? 1) - 1;
      if (n > 0) {
        this.backendRefs.set(b, n);
        continue;
      }
      this.backendRefs.delete(b);
      if (keep.includes(b)) continue;
      const id = this.backendIds.get(b);
      if (id !== undefined) w.delBackends.add((k, o) => k.writeUInt32LE(id, o));
      this.backendIds.release(b);
      gone.push(b);
    }
  }

  private syncAffinity(have: Programmed | undefined, want: Programmed | undefined, w: SyncWrites): void {
    const before = have !== undefined && have.flags & SVC_F.AFFINITY ? have.backends : [];
    const after = want !== undefined && want.flags & SVC_F.AFFINITY ? want.backends : [];
    const id = want?.id ?? have!.id;
    for (const b of after) if (!before.includes(b) || have!.id !== id) w.affMatch.add((k, o) => AffMatchEncode(id, this.backendIds.get(b)!, k, o), (v, o) => v.writeUInt8(1, o));
    for (const b of before) {
      if (after.includes(b) && have!.id === id) continue;
      const bid = this.backendIds.get(b);
      if (bid !== undefined) w.delAffMatch.add((k, o) => AffMatchEncode(have!.id, bid, k, o));
    }
  }

  private syncRanges(have: Programmed | undefined, want: Programmed | undefined, w: SyncWrites): void {
    const before = have?.ranges ?? [];
    const after = want?.ranges ?? [];
    const id = want?.id ?? have!.id;
    for (const r of after) if (!before.includes(r) || have!.id !== id) w.srcRanges.add((k, o) => SrcRangeEncode(id, r, k, o), (v, o) => v.writeUInt8(1, o));
    for (const r of before) if (!after.includes(r) || have!.id !== id) w.delSrcRanges.add((k, o) => SrcRangeEncode(have!.id, r, k, o));
  }

  /** Replaces the plane's picture of the maps with what they hold, seeding the id allocators. */
  private readBack(): void {
    const k = readKernel(this.lb!.fds);
    this.kernel.clear();
    this.kernelClusterIPs.clear();
    for (const ip of k.clusterIPs) this.kernelClusterIPs.add(ip);
    this.backendRefs.clear();
    this.frontendIds.clear();
    this.backendIds.clear();
    const w = new SyncWrites(this.lb!.fds);
    for (const [id, b] of k.backends) {
      const key = backendKey(b.addr, b.port, b.proto);
      if (!this.backendIds.adopt(key, id)) w.delBackends.add((buf, o) => buf.writeUInt32LE(id, o));
    }
    for (const fe of k.frontends) this.adoptFrontend(fe, w);
    for (const slot of k.orphanSlots) w.delSlots.add((buf, o) => SvcKeyCodecEncode(slot, buf, o));
    // Backends no frontend uses are removed by the reconcile that follows.
    for (const [id] of k.backends) {
      const key = this.backendIds.keyOf(id);
      if (key !== undefined && !this.backendRefs.has(key)) {
        w.delBackends.add((buf, o) => buf.writeUInt32LE(id, o));
        this.backendIds.release(key);
      }
    }
    w.flush();
  }

  private adoptFrontend(fe: KernelFrontend, w: SyncWrites): void {
    const key = `${fe.addr}|${fe.port}|${protoName(fe.proto)}`;
    const backends: string[] = [];
    for (const bid of fe.backendIds) backends.push(this.backendIds.keyOf(bid) ?? `missing|${bid}|0`);
    if (!this.frontendIds.adopt(key, fe.id)) {
      // Two frontends with one id: drop this one's master, so the reconcile rewrites it.
      w.delMasters.add((buf, o) => SvcKeyCodecEncode({ addr: fe.addr, port: fe.port, slot: 0, proto: fe.proto, scope: SCOPE_INT }, buf, o));
      return;
    }
    for (const b of backends) this.backendRefs.set(b, (this.backendRefs.get(b) ?? 0) + 1);
    this.kernel.set(key, { id: fe.id, addr: fe.addr, port: fe.port, proto: fe.proto, flags: fe.flags, affinityTimeout: fe.affinityTimeout, backends, ranges: fe.ranges });
  }

  private async destroyStale(gone: readonly string[]): Promise<void> {
    const udp = gone.map(splitBackendKey).filter((b) => b.proto === IPPROTO.UDP);
    if (udp.length === 0 || this.stale === undefined) return;
    try {
      const n = this.stale.destroy(udp);
      if (n > 0) this.logger.info('closed connected UDP sockets of removed backends', { sockets: n, backends: udp.length });
    } catch (e) {
      this.logger.warn('could not close connected UDP sockets of removed backends', { error: e as Error });
    }
  }

  /** The frontends as the maps hold them, with the service each belongs to. Throws DataPlaneError EREAD. */
  async programmed(): Promise<ProgrammedFrontend[]> {
    if (this.lb === undefined) await this.init();
    const k = readKernel(this.lb!.fds);
    const out: ProgrammedFrontend[] = [];
    for (const fe of k.frontends) {
      const key = `${fe.addr}|${fe.port}|${protoName(fe.proto)}`;
      const mine = this.kernel.get(key);
      const rec = mine?.rec;
      const backends = fe.backendIds.map((id) => {
        const b = k.backends.get(id);
        return b === undefined ? `missing-backend-${id}` : b.addr.includes(':') ? `[${b.addr}]:${b.port}` : `${b.addr}:${b.port}`;
      });
      const address = fe.addr.includes(':') ? `[${fe.addr}]:${fe.port}` : `${fe.addr}:${fe.port}`;
      const want = rec === undefined ? undefined : this.desired(rec, fe.id);
      const drift = want === undefined ? 'not in the table' : sameKernel(fe, k.backends, want, this.backendIds) ? '' : 'differs from the table';
      out.push({ service: rec?.service.id ?? '', kind: rec?.kind ?? (fe.flags & SVC_F.NODEPORT ? 'nodePort' : 'unknown'), address, backends, ...(drift === '' ? {} : { drift }), id: fe.id, flags: flagNames(fe.flags), protocol: protoName(fe.proto) });
    }
    return out;
  }

  /** Detaches every hook and removes the pinned maps. Idempotent. Throws DataPlaneError ECLEANUP. */
  async cleanup(): Promise<void> {
    this.lb?.close();
    this.lb = undefined;
    removePins(this.pinPath);
  }
}

import { AffMatchCodec, SrcRangeKeyCodec, SvcKeyCodec } from './codecs.js';
const SvcKeyCodecEncode = SvcKeyCodec.encode;
const AffMatchEncode = AffMatchCodec.encode;
const SrcRangeEncode = SrcRangeKeyCodec.encode;

function sameKernel(fe: KernelFrontend, backends: ReadonlyMap<number, { addr: string; port: number; proto: number }>, want: Programmed, ids: IdAllocator): boolean {
  if (fe.flags !== want.flags || fe.backendIds.length !== want.backends.length) return false;
  return fe.backendIds.every((id, i) => {
    const b = backends.get(id);
    return b !== undefined && ids.get(want.backends[i]!) === id && backendKey(b.addr, b.port, b.proto) === want.backends[i];
  });
}

export function flagNames(flags: number): string[] {
  return Object.entries(SVC_F).filter(([, bit]) => flags & bit).map(([n]) => n.toLowerCase());
}

// What the socket load balancer's maps hold, and how one frontend's entries get from what they
// are to what the table wants. The data plane (index.ts) decides when; this decides what.
//
// Every frontend record of the model (one per concrete address, port and protocol) claims its key;
// when two service ports claim one key, the one `outranks` prefers is programmed, and the other
// takes over when the winner leaves. A programmed frontend has:
//   - a SCOPE_INT master and slots: the path a process on this node gets (`fromPod`), and
//   - a SCOPE_HOST master and slots only when the node's own namespace gets another path
//     (`fromNode` differs: no cluster CIDR to tell pods apart, so pods get the external path),
//   - one frontend id shared by its scopes (rev-NAT entry, counters, affinity, source ranges).
// Each ClusterIP also gets a catch-all entry (port 0, protocol 0) so its unused ports are refused.

import { frontendRecords, outranks, type FrontendPath, type FrontendRecord } from '../../model/frontends.js';
import type { ProxyConfig, ServicePort } from '../../model/types.js';
import { AffMatchCodec, BackendCodec, BE_F, IPPROTO, SCOPE_EXT, SCOPE_HOST, SCOPE_INT, SrcRangeKeyCodec, SVC_F, SvcKeyCodec, SvcValCodec, protoName, type SvcKey } from './codecs.js';
import { Digest, dumpDigest, elementHash, sumHashes } from './digest.js';
import { IdAllocator } from './ids.js';
import { maglevTable } from './maglev.js';
import type { SyncWrites } from './maps.js';
import type { KernelFrontend, KernelState } from './readback.js';

/** A map dumped as raw bytes: keys and values back to back. */
export interface RawDump {
  keys: Buffer;
  values: Buffer;
  count: number;
}

export type LbAlgorithm = 'random' | 'maglev';

/** One scope of one frontend, as the maps hold it (or must hold it). */
export interface Entry {
  scope: number;
  id: number;
  addr: string;
  port: number;
  proto: number;
  flags: number;
  affinityTimeout: number;
  /** Backend keys ("ip|port|proto", "|l" appended for a backend on this node) in slot order. */
  backends: string[];
  /** The same backends decoded (on wanted entries; what was read back has only the keys). */
  targets?: readonly Target[];
  /** Source ranges, sorted (written once per frontend id, from the SCOPE_INT entry). */
  ranges: readonly string[];
}

export const LOOPBACK = { 4: '127.0.0.1', 6: '::1' } as const;

/** A backend's key: where it runs is part of it (the per-packet path source-NATs only remote ones). */
export function backendKey(ip: string, port: number, proto: number, local = false): string {
  return local ? `${ip}|${port}|${proto}|l` : `${ip}|${port}|${proto}`;
}

export function splitBackendKey(key: string): { ip: string; port: number; proto: number; local: boolean } {
  const [ip, port, proto, l] = key.split('|');
  return { ip: ip!, port: Number(port), proto: Number(proto), local: l === 'l' };
}

const entryKey = (fe: string, scope: number): string => `${fe}#${scope}`;
const SCOPES = [SCOPE_INT, SCOPE_HOST, SCOPE_EXT] as const;

/** A backend as the maps hold it, with its key: built once per service port and endpoint. */
interface Target {
  key: string;
  ip: string;
  port: number;
  proto: number;
  local: boolean;
}

const endpointIndex = new WeakMap<ServicePort, Map<string, Target>>();

function targetsById(sp: ServicePort): Map<string, Target> {
  let m = endpointIndex.get(sp);
  if (m === undefined) {
    const proto = IPPROTO[sp.protocol];
    m = new Map(sp.endpoints.map((e) => [e.id, { key: backendKey(e.ip, e.port, proto, e.isLocal), ip: e.ip, port: e.port, proto, local: e.isLocal }]));
    endpointIndex.set(sp, m);
  }
  return m;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function sameEntry(a: Entry, b: Entry): boolean {
  return a.id === b.id && a.flags === b.flags && a.affinityTimeout === b.affinityTimeout && sameList(a.backends, b.backends) && sameList(a.ranges, b.ranges);
}

/**
 * The sources an LB frontend admits, sorted: its loadBalancerSourceRanges and, where the node's
 * primary address is inside them, the service's LB IPs themselves (a node reaching its own VIP
 * arrives with the VIP as source; kube-proxy lets it through with `-s <lb ip>` then).
 */
function sourceRanges(rec: FrontendRecord): string[] {
  if (rec.sourceRanges.length === 0) return [];
  const out = [...rec.sourceRanges];
  if (rec.primaryNodeIPInRanges) for (const ip of rec.service.loadBalancerIPs) out.push(ip.includes(':') ? `${ip}/128` : `${ip}/32`);
  return [...new Set(out)].sort();
}

/** Whether a socket sees the same thing on both paths (masquerade means nothing at connect()). */
function sameSocketPath(a: FrontendPath, b: FrontendPath): boolean {
  return a.verdict === b.verdict && sameList(a.endpoints, b.endpoints);
}

export class SocketLBState {
  /** Frontend key -> the service port records claiming it. */
  private readonly claims = new Map<string, Map<string, FrontendRecord>>();
  /** entryKey(frontend key, scope) -> what the maps hold. */
  private readonly kernel = new Map<string, Entry>();
  /** Frontend key -> the record programmed for it. */
  private readonly programmed = new Map<string, FrontendRecord>();
  /** ClusterIP -> the service ports claiming it (a set: claiming twice is harmless). */
  private readonly clusterIPClaims = new Map<string, Set<string>>();
  private readonly kernelClusterIPs = new Set<string>();
  private readonly dirtyClusterIPs = new Set<string>();
  private readonly backendRefs = new Map<string, number>();
  /** The claimed service ports with a NodePort: an address change re-claims only these. */
  private readonly nodePortPorts = new Map<string, ServicePort>();
  readonly frontendIds = new IdAllocator('frontend', 262143);
  readonly backendIds: IdAllocator;

  /**
   * The per-packet path (tc): null while it is off; else whether a frontend without an external
   * entry masquerades, per family (the programs read that from rd_config).
   */
  private perPacket: { 4: boolean; 6: boolean } | null = null;

  /** Turns the external entries on or off; the next reconcile writes or removes them. */
  setPerPacket(p: { 4: boolean; 6: boolean } | null): void {
    this.perPacket = p;
  }

  constructor(maxBackends: number, private readonly maglevTableSize: number, private readonly algorithm: (sp: ServicePort) => LbAlgorithm) {
    this.backendIds = new IdAllocator('backend', maxBackends - 1);
  }

  /** Every programmed frontend: key, id and record. */
  *frontends(): Generator<{ key: string; id: number; rec: FrontendRecord }> {
    for (const [key, rec] of this.programmed) {
      const id = this.frontendIds.get(key);
      if (id !== undefined) yield { key, id, rec };
    }
  }

  /** The record programmed at a frontend key, for read-back. */
  recordOf(key: string): FrontendRecord | undefined {
    return this.programmed.get(key);
  }

  /** The entry the table wants for a programmed frontend key and scope (for drift checks). */
  wanted(key: string, scope: number): Entry | undefined {
    const rec = this.programmed.get(key);
    const id = this.frontendIds.get(key);
    if (rec === undefined || id === undefined) return undefined;
    return this.desired(rec, id).find((e) => e.scope === scope);
  }

  // ---- claims ------------------------------------------------------------------------------

  claim(sp: ServicePort, cfg: ProxyConfig, addrs: readonly string[], dirty: Set<string>): void {
    if (sp.nodePort > 0) this.nodePortPorts.set(sp.id, sp);
    let ports = this.clusterIPClaims.get(sp.clusterIP);
    if (ports === undefined) this.clusterIPClaims.set(sp.clusterIP, (ports = new Set()));
    ports.add(sp.id);
    this.dirtyClusterIPs.add(sp.clusterIP);
    for (const r of frontendRecords(sp, cfg, addrs)) {
      if (r.protocol === 'SCTP') continue;
      let c = this.claims.get(r.key);
      if (c === undefined) this.claims.set(r.key, (c = new Map()));
      c.set(sp.id, r);
      dirty.add(r.key);
    }
  }

  /** `addrs` must be the NodePort addresses `sp` was claimed with (a change of them is a reconcile). */
  unclaim(sp: ServicePort, cfg: ProxyConfig, addrs: readonly string[], dirty: Set<string>): void {
    if (this.nodePortPorts.get(sp.id) === sp) this.nodePortPorts.delete(sp.id);
    const ports = this.clusterIPClaims.get(sp.clusterIP);
    ports?.delete(sp.id);
    if (ports?.size === 0) this.clusterIPClaims.delete(sp.clusterIP);
    this.dirtyClusterIPs.add(sp.clusterIP);
    for (const r of frontendRecords(sp, cfg, addrs)) {
      const c = this.claims.get(r.key);
      c?.delete(sp.id);
      if (c?.size === 0) this.claims.delete(r.key);
      dirty.add(r.key);
    }
  }

  /**
   * Moves every NodePort claim from the addresses `from` to `to`: what an address change costs is
   * the NodePort frontends, not the table.
   */
  moveNodePorts(cfg: ProxyConfig, from: readonly string[], to: readonly string[], dirty: Set<string>): void {
    for (const sp of [...this.nodePortPorts.values()]) {
      this.unclaim(sp, cfg, from, dirty);
      this.claim(sp, cfg, to, dirty);
    }
  }

  resetClaims(): void {
    this.nodePortPorts.clear();
    this.claims.clear();
    this.clusterIPClaims.clear();
  }

  /** Every frontend key the maps hold (a reconcile visits them all). */
  kernelKeys(): Set<string> {
    const out = new Set<string>();
    for (const k of this.kernel.keys()) out.add(k.slice(0, k.lastIndexOf('#')));
    return out;
  }

  private winner(key: string): FrontendRecord | undefined {
    const c = this.claims.get(key);
    if (c === undefined) return undefined;
    let best: FrontendRecord | undefined;
    for (const r of c.values()) if (best === undefined || outranks(r, best)) best = r;
    return best;
  }

  // ---- desired entries -----------------------------------------------------------------------

  private entry(rec: FrontendRecord, path: FrontendPath, scope: number, id: number, maglev = scope === SCOPE_INT): Entry {
    const sp = rec.service;
    const proto = IPPROTO[rec.protocol];
    let flags = 0;
    let backends: string[] = [];
    let targets: Target[] = [];
    if (path.verdict === 'reject') flags |= SVC_F.REJECT;
    else if (path.verdict === 'drop') flags |= SVC_F.DROP;
    else {
      const eps = targetsById(sp);
      targets = path.endpoints.map((eid) => eps.get(eid)!);
      backends = targets.map((t) => t.key);
    }
    // Affinity is validated against the SCOPE_INT backends (rd_aff_match is per frontend id); the
    // per-packet path keeps its own affinity, by client address.
    if (rec.affinityTimeoutSeconds > 0 && scope !== SCOPE_HOST) flags |= SVC_F.AFFINITY;
    if (scope === SCOPE_EXT && path.masquerade) flags |= SVC_F.MASQ;
    if (rec.sourceRanges.length > 0) flags |= SVC_F.SRC_RANGE;
    if (rec.primaryNodeIPInRanges) flags |= SVC_F.SRC_NODE_OK;
    if (rec.kind === 'nodePort') flags |= SVC_F.NODEPORT;
    if (rec.ip === LOOPBACK[4] || rec.ip === LOOPBACK[6]) flags |= SVC_F.LOOPBACK;
    if (this.algorithm(sp) === 'maglev' && backends.length > 0 && maglev) flags |= SVC_F.MAGLEV;
    return {
      scope, id, addr: rec.ip, port: rec.port, proto, flags, affinityTimeout: scope !== SCOPE_HOST ? rec.affinityTimeoutSeconds : 0, backends, targets,
      ranges: scope === SCOPE_INT ? sourceRanges(rec) : [],
    };
  }

  /** Desired entries per record (records are immutable and cached by the model): a reconcile of an unchanged frontend compares by identity. */
  private readonly desiredCache = new WeakMap<FrontendRecord, { id: number; entries: Entry[] }>();

  private desired(rec: FrontendRecord, id: number): Entry[] {
    const hit = this.desiredCache.get(rec);
    if (hit !== undefined && hit.id === id) return hit.entries;
    const entries = [this.entry(rec, rec.fromPod, SCOPE_INT, id)];
    if (!sameSocketPath(rec.fromPod, rec.fromNode)) entries.push(this.entry(rec, rec.fromNode, SCOPE_HOST, id));
    // The per-packet path falls back to SCOPE_INT (masqueraded as rd_config says): an external
    // entry only where that would be wrong. It shares the frontend's Maglev table only when it
    // has the same backends (else it picks at random).
    const pp = this.perPacket;
    if (pp !== null && (!sameSocketPath(rec.fromPod, rec.fromExternal) || rec.fromExternal.masquerade !== pp[rec.family])) {
      entries.push(this.entry(rec, rec.fromExternal, SCOPE_EXT, id, sameList(rec.fromExternal.endpoints, rec.fromPod.endpoints)));
    }
    this.desiredCache.set(rec, { id, entries });
    return entries;
  }

  // ---- reconcile -------------------------------------------------------------------------------

  /**
   * Queues the writes that bring one frontend key to what the claims want; `gone` collects removed
   * backends. `rewrite` writes every element of a wanted entry even where the picture of the maps
   * says it holds (for maps whose bytes differ in ways the picture does not show).
   */
  reconcile(key: string, w: SyncWrites, gone: string[], rewrite = false): void {
    const rec = this.winner(key);
    const id = rec === undefined ? this.frontendIds.get(key) : this.frontendIds.acquire(key);
    const wants = rec === undefined || id === undefined ? [] : this.desired(rec, id);
    for (const scope of SCOPES) {
      const have = this.kernel.get(entryKey(key, scope));
      const want = wants.find((e) => e.scope === scope);
      if (want === undefined) {
        if (have !== undefined) this.remove(key, have, w, gone);
      } else if (have === undefined || rewrite || (have !== want && !sameEntry(have, want))) {
        this.write(key, have, want, w, gone, rewrite);
      } else if (have !== want) {
        // Equal but read back: keep the wanted object, so the next reconcile compares identities.
        this.setKernel(entryKey(key, scope), want);
      }
    }
    if (rec === undefined) {
      this.programmed.delete(key);
      this.frontendIds.release(key);
    } else {
      this.programmed.set(key, rec);
    }
  }

  private write(key: string, have: Entry | undefined, want: Entry, w: SyncWrites, gone: string[], rewrite: boolean): void {
    const master: SvcKey = { addr: want.addr, port: want.port, slot: 0, proto: want.proto, scope: want.scope };
    for (const t of want.targets ?? []) this.refBackend(t, w);
    // Only the slots whose backend changed (slots are never renumbered, so the rest hold).
    const sameId = have !== undefined && have.id === want.id && !rewrite;
    // The entry's digest comes with the writes when every element is written (else verify() computes it).
    let svcHash = 0;
    let complete = true;
    for (let i = 0; i < want.backends.length; i++) {
      if (sameId && have.backends[i] === want.backends[i]) {
        complete = false;
        continue;
      }
      svcHash = sumHashes(svcHash, w.slot(want.addr, want.port, want.proto, want.scope, i + 1, this.backendIds.get(want.backends[i]!)!, want.id));
    }
    svcHash = sumHashes(svcHash, w.master(master, { backendId: 0, count: want.backends.length, flags: want.flags, revNatId: want.id, affinityTimeout: want.affinityTimeout }));
    if (want.scope === SCOPE_INT) {
      if (have === undefined || have.id !== want.id || rewrite) w.revNatEntry(want.id, { addr: want.addr, port: want.port });
      this.syncAffinity(rewrite ? undefined : have, want, w);
      this.syncRanges(rewrite ? undefined : have, want, w);
      if (want.flags & SVC_F.MAGLEV) {
        w.maglev.push({ id: want.id, table: maglevTable(want.backends.map((b) => ({ key: b, id: this.backendIds.get(b)! })), this.maglevTableSize) });
      } else if (have !== undefined && have.flags & SVC_F.MAGLEV) {
        w.delMaglev.add((k, o) => k.writeUInt32LE(have.id, o));
      }
    }
    if (have !== undefined) {
      w.deleteSlots(want.addr, want.port, want.proto, want.scope, want.backends.length + 1, have.backends.length);
      this.unrefBackends(have.backends, w, gone);
    }
    const ek = entryKey(key, want.scope);
    this.setKernel(ek, want);
    if (complete) this.entryDigests.set(ek, { svc: svcHash, ranges: this.rangesDigest(want) });
  }

  private remove(key: string, have: Entry, w: SyncWrites, gone: string[]): void {
    const master: SvcKey = { addr: have.addr, port: have.port, slot: 0, proto: have.proto, scope: have.scope };
    w.delMasters.add((k, o) => SvcKeyCodec.encode(master, k, o));
    w.deleteSlots(have.addr, have.port, have.proto, have.scope, 1, have.backends.length);
    if (have.scope === SCOPE_INT) {
      w.delRevNat.add((k, o) => k.writeUInt32LE(have.id, o));
      if (have.flags & SVC_F.MAGLEV) w.delMaglev.add((k, o) => k.writeUInt32LE(have.id, o));
      this.syncAffinity(have, undefined, w);
      this.syncRanges(have, undefined, w);
    }
    this.unrefBackends(have.backends, w, gone);
    const ek = entryKey(key, have.scope);
    this.kernel.delete(ek);
    this.entryDigests.delete(ek);
  }

  /** Local endpoint address -> programmed local backends at it (where replies come from). */
  private readonly localIPs = new Map<string, number>();
  /** Bumped whenever the set of local endpoint addresses changes. */
  localIPsVersion = 0;

  localEndpointIPs(): string[] {
    return [...this.localIPs.keys()];
  }

  private countLocal(key: string, d: 1 | -1): void {
    if (!key.endsWith('|l')) return;
    const ip = key.slice(0, key.indexOf('|'));
    const n = (this.localIPs.get(ip) ?? 0) + d;
    if (n > 0) {
      if (d === 1 && n === 1) this.localIPsVersion++;
      this.localIPs.set(ip, n);
    } else {
      this.localIPs.delete(ip);
      this.localIPsVersion++;
    }
  }

  private refBackend(t: Target, w: SyncWrites): void {
    const n = this.backendRefs.get(t.key) ?? 0;
    if (n === 0) this.countLocal(t.key, 1);
    if (n === 0 && this.backendIds.get(t.key) === undefined) {
      const id = this.backendIds.acquire(t.key);
      this.backendDigests.set(id, w.backend(id, { addr: t.ip, port: t.port, proto: t.proto, flags: t.local ? BE_F.LOCAL : 0 }));
    }
    this.backendRefs.set(t.key, n + 1);
  }

  private unrefBackends(old: readonly string[], w: SyncWrites, gone: string[]): void {
    for (const b of old) {
      const n = (this.backendRefs.get(b) ?? 1) - 1;
      if (n > 0) {
        this.backendRefs.set(b, n);
        continue;
      }
      this.backendRefs.delete(b);
      this.countLocal(b, -1);
      const id = this.backendIds.get(b);
      if (id !== undefined) {
        w.delBackends.add((k, o) => k.writeUInt32LE(id, o));
        this.backendDigests.delete(id);
      }
      this.backendIds.release(b);
      gone.push(b);
    }
  }

  private syncAffinity(have: Entry | undefined, want: Entry | undefined, w: SyncWrites): void {
    const before = have !== undefined && have.flags & SVC_F.AFFINITY ? have.backends : [];
    const after = want !== undefined && want.flags & SVC_F.AFFINITY ? want.backends : [];
    const renumbered = have !== undefined && want !== undefined && have.id !== want.id;
    for (const b of after) {
      if (before.includes(b) && !renumbered) continue;
      w.affMatch.add((k, o) => AffMatchCodec.encode(want!.id, this.backendIds.get(b)!, k, o), (v, o) => v.writeUInt8(1, o));
    }
    for (const b of before) {
      if (after.includes(b) && !renumbered) continue;
      const bid = this.backendIds.get(b);
      if (bid !== undefined) w.delAffMatch.add((k, o) => AffMatchCodec.encode(have!.id, bid, k, o));
    }
  }

  private syncRanges(have: Entry | undefined, want: Entry | undefined, w: SyncWrites): void {
    const before = have?.ranges ?? [];
    const after = want?.ranges ?? [];
    const renumbered = have !== undefined && want !== undefined && have.id !== want.id;
    for (const r of after) if (!before.includes(r) || renumbered) w.srcRanges.add((k, o) => SrcRangeKeyCodec.encode(want!.id, r, k, o), (v, o) => v.writeUInt8(1, o));
    for (const r of before) if (!after.includes(r) || renumbered) w.delSrcRanges.add((k, o) => SrcRangeKeyCodec.encode(have!.id, r, k, o));
  }

  /** Writes or deletes the catch-all entries of the ClusterIPs that changed (every one when `all`; `rewrite` writes even those the maps hold). */
  reconcileClusterIPs(all: boolean, w: SyncWrites, rewrite = false): void {
    const ips = all ? new Set([...this.clusterIPClaims.keys(), ...this.kernelClusterIPs]) : this.dirtyClusterIPs;
    for (const ip of ips) {
      const key: SvcKey = { addr: ip, port: 0, slot: 0, proto: 0, scope: SCOPE_INT };
      const want = this.clusterIPClaims.has(ip);
      if (want && (rewrite || !this.kernelClusterIPs.has(ip))) {
        w.master(key, { backendId: 0, count: 0, flags: SVC_F.REJECT, revNatId: 0, affinityTimeout: 0 });
        this.kernelClusterIPs.add(ip);
      } else if (!want && this.kernelClusterIPs.has(ip)) {
        w.delMasters.add((k, o) => SvcKeyCodec.encode(key, k, o));
        this.kernelClusterIPs.delete(ip);
        this.catchAllDigests.delete(ip);
      }
    }
    this.dirtyClusterIPs.clear();
  }

  /** Writes every backend again (with `rewrite` reconciles: bytes the picture does not show). */
  rewriteBackends(w: SyncWrites): void {
    for (const [key, id] of this.backendIds.entries()) {
      const b = splitBackendKey(key);
      this.backendDigests.set(id, w.backend(id, { addr: b.ip, port: b.port, proto: b.proto, flags: b.local ? BE_F.LOCAL : 0 }));
    }
  }

  /** After the writes of a sync landed: ids freed by it may be handed out again. */
  settle(): void {
    this.frontendIds.settle();
    this.backendIds.settle();
  }

  // ---- verification by digest ---------------------------------------------------------------

  private setKernel(ek: string, e: Entry): void {
    this.kernel.set(ek, e);
    this.entryDigests.delete(ek);
  }

  /** Per kernel entry: the hashes of its rd_services elements and of its rd_src_ranges elements (null: a slot names an unknown backend). */
  private readonly entryDigests = new Map<string, { svc: number; ranges: number } | null>();
  /** Per backend id: the hash of its rd_backends element, kept from the write (or adoption) on. */
  private readonly backendDigests = new Map<number, number>();
  /** Per ClusterIP: the hash of its catch-all element. */
  private readonly catchAllDigests = new Map<string, number>();
  private readonly dk = Buffer.alloc(SvcKeyCodec.size);
  private readonly dv = Buffer.alloc(Math.max(SvcValCodec.size, BackendCodec.size));

  /** The elements one entry stands for, encoded as the writes encode them, hashed. */
  /** The summed hashes of the master and slots (1 + backends elements) and of the ranges. */
  private digestOf(e: Entry): { svc: number; ranges: number } | null {
    const { dk: k, dv: v } = this;
    SvcKeyCodec.encodeFields(e.addr, e.port, 0, e.proto, e.scope, k, 0);
    SvcValCodec.encodeFields(0, e.backends.length, e.flags, e.id, e.affinityTimeout, v, 0);
    let svc = elementHash(k, 0, SvcKeyCodec.size, v, 0, SvcValCodec.size);
    for (let i = 0; i < e.backends.length; i++) {
      const bid = this.backendIds.get(e.backends[i]!);
      if (bid === undefined) return null;
      k.writeUInt16LE(i + 1, SvcKeyCodec.offsets.slot);
      SvcValCodec.encodeFields(bid, 0, 0, e.id, 0, v, 0);
      svc = sumHashes(svc, elementHash(k, 0, SvcKeyCodec.size, v, 0, SvcValCodec.size));
    }
    return { svc, ranges: this.rangesDigest(e) };
  }

  private rangesDigest(e: Entry): number {
    let h = 0;
    if (e.ranges.length === 0) return h;
    const { dk: k, dv: v } = this;
    v[0] = 1;
    for (const r of e.ranges) {
      SrcRangeKeyCodec.encode(e.id, r, k, 0);
      h = sumHashes(h, elementHash(k, 0, SrcRangeKeyCodec.size, v, 0, 1));
    }
    return h;
  }

  /**
   * Whether raw dumps of rd_services, rd_backends and rd_src_ranges hold exactly what this state
   * wrote: null if so, else the first map that differs. Costs a hash per element and no decoding;
   * per-entry hashes are cached until the entry is rewritten.
   */
  verify(d: { services: RawDump; backends: RawDump; ranges: RawDump }): string | null {
    const svc = new Digest();
    const ranges = new Digest();
    for (const [ek, e] of this.kernel) {
      let h = this.entryDigests.get(ek);
      if (h === undefined) this.entryDigests.set(ek, (h = this.digestOf(e)));
      if (h === null) return `${ek.slice(0, ek.lastIndexOf('#'))} names a backend this agent holds no id for`;
      svc.add(h.svc, 1 + e.backends.length);
      ranges.add(h.ranges, e.ranges.length);
    }
    const { dk: k, dv: v } = this;
    for (const ip of this.kernelClusterIPs) {
      let h = this.catchAllDigests.get(ip);
      if (h === undefined) {
        SvcKeyCodec.encodeFields(ip, 0, 0, 0, SCOPE_INT, k, 0);
        SvcValCodec.encodeFields(0, 0, SVC_F.REJECT, 0, 0, v, 0);
        this.catchAllDigests.set(ip, (h = elementHash(k, 0, SvcKeyCodec.size, v, 0, SvcValCodec.size)));
      }
      svc.add(h);
    }
    const backends = new Digest();
    for (const [key, id] of this.backendIds.entries()) {
      const h = this.backendDigests.get(id);
      if (h === undefined) return `backend ${key} has no digest`;
      backends.add(h);
    }
    const have = dumpDigest(d.services, SvcKeyCodec.size, SvcValCodec.size);
    if (!have.equals(svc)) return `rd_services holds ${have.count} entries of this path, ${svc.count} written, or other contents`;
    const haveBe = dumpDigest(d.backends, 4, BackendCodec.size);
    if (!haveBe.equals(backends)) return `rd_backends holds ${haveBe.count} backends, ${backends.count} written, or other contents`;
    const haveR = dumpDigest(d.ranges, SrcRangeKeyCodec.size, 1);
    if (!haveR.equals(ranges)) return `rd_src_ranges holds ${haveR.count} ranges, ${ranges.count} written, or other contents`;
    return null;
  }

  /**
   * The first difference between the maps as read back and what this state wrote, or null: the
   * cheap periodic check (no claims, no desired entries), which escalates to a reconcile.
   */
  drift(k: KernelState): string | null {
    if (k.orphanSlots.length > 0) return `${k.orphanSlots.length} backend slot(s) without a frontend`;
    if (k.frontends.length !== this.kernel.size) return `${k.frontends.length} frontend entries in the maps, ${this.kernel.size} written`;
    for (const fe of k.frontends) {
      const key = `${fe.addr}|${fe.port}|${protoName(fe.proto)}`;
      const e = this.kernel.get(entryKey(key, fe.scope));
      if (e === undefined) return `${key} is in the maps but was never written`;
      if (e.id !== fe.id || e.flags !== fe.flags || e.affinityTimeout !== fe.affinityTimeout) return `${key}: id, flags or affinity differ`;
      if (e.backends.length !== fe.backendIds.length) return `${key}: ${fe.backendIds.length} backends in the maps, ${e.backends.length} written`;
      for (let i = 0; i < e.backends.length; i++) if (this.backendIds.get(e.backends[i]!) !== fe.backendIds[i]) return `${key}: slot ${i + 1} differs`;
      if (fe.scope === SCOPE_INT && !sameList(e.ranges, fe.ranges)) return `${key}: source ranges differ`;
    }
    if (k.backends.size !== this.backendIds.size) return `${k.backends.size} backends in the maps, ${this.backendIds.size} written`;
    for (const [id, b] of k.backends) if (this.backendIds.keyOf(id) !== backendKey(b.addr, b.port, b.proto, (b.flags & BE_F.LOCAL) !== 0)) return `backend ${id} differs`;
    if (k.clusterIPs.size !== this.kernelClusterIPs.size || [...k.clusterIPs].some((ip) => !this.kernelClusterIPs.has(ip))) return 'ClusterIP catch-all entries differ';
    return null;
  }

  // ---- adoption ------------------------------------------------------------------------------

  /**
   * Replaces the picture of the maps with what they hold (seeding the id allocators), and queues
   * the deletion of what no frontend accounts for: orphan slots, unused backends, duplicate ids.
   */
  adopt(k: KernelState, w: SyncWrites): void {
    this.kernel.clear();
    this.entryDigests.clear();
    this.backendDigests.clear();
    this.catchAllDigests.clear();
    this.programmed.clear();
    this.backendRefs.clear();
    this.frontendIds.clear();
    this.backendIds.clear();
    this.kernelClusterIPs.clear();
    for (const ip of k.clusterIPs) this.kernelClusterIPs.add(ip);
    for (const [id, b] of k.backends) {
      // Backends carry no flags but LOCAL: one with other bytes is rewritten under a new id.
      if ((b.flags & ~BE_F.LOCAL) !== 0 || !this.backendIds.adopt(backendKey(b.addr, b.port, b.proto, (b.flags & BE_F.LOCAL) !== 0), id)) {
        w.delBackends.add((buf, o) => buf.writeUInt32LE(id, o));
        continue;
      }
      this.dk.writeUInt32LE(id, 0);
      BackendCodec.encode(b, this.dv, 0);
      this.backendDigests.set(id, elementHash(this.dk, 0, 4, this.dv, 0, BackendCodec.size));
    }
    for (const fe of k.frontends) this.adoptFrontend(fe, w);
    for (const slot of k.orphanSlots) w.delSlots.add((buf, o) => SvcKeyCodec.encode(slot, buf, o));
    this.localIPs.clear();
    for (const key of this.backendRefs.keys()) this.countLocal(key, 1);
    this.localIPsVersion++;
    for (const [id] of k.backends) {
      const key = this.backendIds.keyOf(id);
      if (key !== undefined && !this.backendRefs.has(key)) {
        w.delBackends.add((buf, o) => buf.writeUInt32LE(id, o));
        this.backendIds.release(key);
        this.backendDigests.delete(id);
      }
    }
  }

  private adoptFrontend(fe: KernelFrontend, w: SyncWrites): void {
    const key = `${fe.addr}|${fe.port}|${protoName(fe.proto)}`;
    const have = this.frontendIds.get(key);
    if (have === undefined ? !this.frontendIds.adopt(key, fe.id) : have !== fe.id) {
      // An id another frontend holds: drop this entry so the reconcile writes it afresh.
      w.delMasters.add((buf, o) => SvcKeyCodec.encode({ addr: fe.addr, port: fe.port, slot: 0, proto: fe.proto, scope: fe.scope }, buf, o));
      return;
    }
    const backends = fe.backendIds.map((bid) => this.backendIds.keyOf(bid) ?? `missing|${bid}|0`);
    for (const b of backends) this.backendRefs.set(b, (this.backendRefs.get(b) ?? 0) + 1);
    this.setKernel(entryKey(key, fe.scope), { scope: fe.scope, id: fe.id, addr: fe.addr, port: fe.port, proto: fe.proto, flags: fe.flags, affinityTimeout: fe.affinityTimeout, backends, ranges: fe.scope === SCOPE_INT ? fe.ranges : [] });
  }
}

// The eBPF data plane, socket half: cgroup connect4/6, sendmsg4/6, recvmsg4/6 and getpeername4/6
// programs (bpf/sock_lb.c) translate every connection that starts in a process inside the
// attached cgroup (pods and the node's own processes) to a backend at connect()/sendmsg() time, so
// no packet of it is NATed or seen by nf_conntrack. The model's frontend records decide
// everything; state.ts turns the paths local processes get into map entries, and this file
// decides when (partial syncs, reconciles, address changes).
//
// Maps (bpf/lib/maps.h; codecs.ts documents each struct):
//   rd_services  (frontend address, port, protocol, scope, slot) -> slot 0: count, flags, id,
//                affinity timeout; slots 1..count: backend ids. Socket LB writes SCOPE_INT (and
//                SCOPE_HOST where the node's own namespace gets another path than its pods).
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
// The first sync, and any sync after a failed one, reconciles against read-back: the maps are
// dumped and decoded, what matches the table is left alone, the rest is written or deleted. That
// is how a restarted agent adopts the previous one's state without touching a working entry.
// Later full syncs, and partial ones at most every `reconcileIntervalMs`, verify instead: the
// maps are dumped raw and compared with what this plane wrote by an order-independent digest
// (digest.ts), with no decoding; only a difference makes the plane decode, say what differs, and
// reconcile. So a map entry deleted behind the agent's back is restored within one sync period,
// and verifying 10,000 services costs the dump and a hash per element.

import { readFileSync } from 'node:fs';
import { findCgroup2Mount } from '../../util/mounts.js';
import type { Change, ProxyConfig, ServiceTable } from '../../model/types.js';
import { allPorts, beforeAfter } from '../../model/types.js';
import { endpointId } from '../../model/build.js';
import { nodePortAddresses, primaryNodeIP } from '../../model/nodeport-addresses.js';
import type { Logger } from '../../observe/log.js';
import { DataPlaneError, type ApplyOptions, type ApplyResult, type DataPlane, type DataPlaneCounters, type ProgrammedFrontend } from '../dataplane.js';
import { BackendCodec, BE_F, BeStatsCodec, CFG_F, flagNames, IPPROTO, SCOPE_EXT, SCOPE_HOST, SVC_F, SrcRangeKeyCodec, SvcKeyCodec, SvcStatsCodec, SvcValCodec, protoName } from './codecs.js';
import { bpfMap, libbpfAvailable, netnsCookie } from './libbpf.js';
import { checkMaglevTableSize } from './maglev.js';
import { dumpRaw, SyncWrites, writeConfig, type MapFds, type MapIO } from './maps.js';
import { devicesFor, devicesWithin, readDirectRoutes, type DirectRoute } from '../../source/pod-devices.js';
import { watchIp } from '../../source/local-addresses.js';
import { attachPodDevices, DEFAULT_MAP_SIZES, DEFAULT_PIN_PATH, loadPerPacket, loadSocketLB, removePins, type MapSizes, type PerPacket, type SocketLB } from './programs.js';
import type { Knobs } from './codecs.js';
import { DEFAULT_CT_TIMEOUTS, DEFAULT_SNAT_PORTS, type CtTimeouts } from './defaults.js';
import { KernelTracer, type KernelTrace, type TracePacket } from './kernel-trace.js';
import { sweepCt } from './ct.js';
import { detectsLocal } from '../../model/frontends.js';
import { readKernel, readPerCpu, type KernelFrontend } from './readback.js';
import { backendKey, LOOPBACK, SocketLBState, splitBackendKey, type Entry, type LbAlgorithm } from './state.js';
import { StaleUdp } from './stale-udp.js';

export type { LbAlgorithm } from './state.js';

export interface EbpfDataPlaneOptions {
  config: ProxyConfig | (() => ProxyConfig);
  logger: Logger;
  /** The cgroup whose processes are served (default: the cgroup v2 root). */
  cgroupPath?: string;
  /** bpffs directory for pinned maps and links (default /sys/fs/bpf/rudder). */
  pinPath?: string;
  /** Leave pods' sockets alone (only the host namespace is translated at connect()). */
  hostNamespaceOnly?: boolean;
  /**
   * The network namespace treated as the node's own (loopback NodePorts, the node's path);
   * default: the agent's. Tests use it to play the node from a scratch namespace.
   */
  hostNetnsCookie?: bigint;
  /** Default backend selection; the service.rudder.io/lb-algorithm annotation overrides it. */
  lbAlgorithm?: LbAlgorithm;
  sizes?: Partial<MapSizes>;
  /** Re-read the maps on an otherwise partial sync at most this often (ms); default 30 s. */
  reconcileIntervalMs?: number;
  /**
   * Interfaces whose packets the per-packet programs translate (external clients of NodePorts,
   * external and LB IPs, off-cluster clients of ClusterIPs); empty or absent: socket LB only.
   */
  devices?: readonly string[];
  /** Per-packet path: connection tracking timeouts and the ports SNATed flows use. */
  ctTimeouts?: CtTimeouts;
  snatPorts?: [number, number];
  /** How often the per-packet connection tracking is swept of expired entries (ms); default 10 s. */
  ctSweepIntervalMs?: number;
  /** Map fds and operations to use instead of loading the programs (unit tests, with a fake). */
  maps?: { fds: MapFds; io: MapIO; perPacket?: boolean };
  now?: () => number;
}

export class EbpfDataPlane implements DataPlane {
  readonly name = 'ebpf' as const;
  private readonly logger: Logger;
  private readonly config: () => ProxyConfig;
  private readonly pinPath: string;
  private readonly sizes: MapSizes;
  private readonly reconcileIntervalMs: number;
  private readonly now: () => number;
  private readonly state: SocketLBState;
  private readonly io: MapIO;
  private lb: Pick<SocketLB, 'fds' | 'adopted' | 'close'> | undefined;
  private perPacket: PerPacket | undefined;
  private stale: StaleUdp | undefined;
  /** The cgroup the hooks are attached to (known after init). */
  cgroupPath = '';
  /** The NodePort addresses the claims were made with. */
  private nodePortAddrs: readonly string[] = [];
  private lastReconcile = 0;
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
    this.io = opts.maps?.io ?? bpfMap;
    const dflt = opts.lbAlgorithm ?? 'random';
    this.state = new SocketLBState(this.sizes.backends, this.sizes.maglevTableSize, (sp) => (sp.lbAlgorithm === '' || sp.lbAlgorithm === undefined ? dflt : sp.lbAlgorithm));
  }

  /**
   * Loads and attaches the programs (adopting pinned state). Throws DataPlaneError EUNSUPPORTED
   * when the kernel or libbpf cannot run them, EINIT otherwise.
   */
  async init(): Promise<void> {
    if (this.lb !== undefined) return;
    if (this.opts.maps !== undefined) {
      this.lb = { fds: this.opts.maps.fds, adopted: 0, close: () => {} };
      return;
    }
    const why = libbpfAvailable();
    if (why !== null) throw new DataPlaneError('EUNSUPPORTED', why);
    if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new DataPlaneError('EUNSUPPORTED', 'the eBPF data plane needs a little-endian host');
    const cg = this.opts.cgroupPath ?? findCgroup2Mount();
    if (cg === null) throw new DataPlaneError('EUNSUPPORTED', 'no cgroup v2 mount in /proc/self/mountinfo: socket load balancing attaches to a cgroup v2');
    this.cgroupPath = cg;
    const hostNamespaceOnly = this.opts.hostNamespaceOnly ?? false;
    const knobs = {
      hostNetnsCookie: this.opts.hostNetnsCookie ?? netnsCookie(), hostNamespaceOnly, maglevTableSize: this.sizes.maglevTableSize,
      ct: this.opts.ctTimeouts ?? DEFAULT_CT_TIMEOUTS, snatPorts: this.opts.snatPorts ?? DEFAULT_SNAT_PORTS, snatSkip: ephemeralPorts(this.logger),
    };
    this.lb = loadSocketLB({ pinPath: this.pinPath, cgroupPath: cg, sizes: this.sizes, logger: this.logger, knobs });
    this.stale = new StaleUdp(cg, this.logger);
    this.logger.info('eBPF socket load balancer attached', { cgroup: cg, pins: this.pinPath, hooksAdopted: this.lb.adopted, lbAlgorithm: this.opts.lbAlgorithm ?? 'random', hostNamespaceOnly });
    const devices = this.opts.devices ?? [];
    if (devices.length > 0) {
      try {
        this.perPacket = loadPerPacket({ pinPath: this.pinPath, knobs, sizes: this.sizes, devices, logger: this.logger });
      } catch (e) {
        this.lb.close();
        this.lb = undefined;
        throw e;
      }
      this.knobs = knobs;
      this.startCtSweep();
      if (hostNamespaceOnly) this.watchPodRoutes();
      this.logger.info('eBPF per-packet path attached', { devices: devices.join(','), snatPorts: knobs.snatPorts.join('-'), leftOut: knobs.snatSkip.join('-') });
    }
  }

  /**
   * Writes the changes, or, on a full sync, whatever differs between the maps and the table. On
   * a partial sync at most every reconcileIntervalMs, after the changes are written (a change
   * never waits behind it), the maps are read back and compared with what the plane wrote; only
   * drift makes it reconcile. Throws DataPlaneError EAPPLY; the maps may then be half written
   * (every step is a valid state), and the next sync reconciles against read-back.
   */
  async apply(changes: readonly Change[], table: ServiceTable, opts: ApplyOptions): Promise<ApplyResult> {
    if (this.lb === undefined) await this.init();
    const cfg = this.config();
    // Localhost NodePorts: the node's own processes reach NodePorts on 127.0.0.1 and ::1 too
    // (the programs serve those addresses only to the host namespace).
    const addrs = [...nodePortAddresses(cfg), LOOPBACK[4], LOOPBACK[6]];
    // NodePort addresses come and go with the node's interfaces: moved frontend by frontend. What
    // else the records depend on changes rarely, and re-reads everything.
    const cfgKey = JSON.stringify([primaryNodeIP(cfg, 4), primaryNodeIP(cfg, 6), cfg.clusterCIDRs, cfg.masqueradeAll]);
    try {
      if (this.mustReconcile || cfgKey !== this.configKey) {
        const written = this.reconcileAll(table, cfg, addrs);
        this.configKey = cfgKey;
        return { written, bytes: 0 };
      }
      // A full sync of a plane that knows what the maps hold (every earlier sync landed) verifies
      // the maps against that, then writes what the full diff found; it rebuilds everything only
      // where the maps differ. Partial syncs do the same check at most every reconcileIntervalMs.
      let written = opts.full ? 0 : this.applyChanges(changes, cfg, addrs);
      if (opts.full || this.now() - this.lastReconcile >= this.reconcileIntervalMs) {
        const bad = this.verifyMaps();
        this.lastReconcile = this.now();
        if (bad !== null) {
          // Say what differs; where the decoded picture shows nothing, the bytes differ in a way
          // only the digest sees, and everything is written again.
          const drift = this.state.drift(readKernel(this.lb!.fds, this.io));
          this.logger.warn('the BPF maps differ from what this agent wrote: repairing them', { drift: drift ?? bad });
          this.driftRepairs++;
          this.mustReconcile = true;
          return { written: written + this.reconcileAll(table, cfg, addrs, drift === null), bytes: 0 };
        }
      }
      if (opts.full) written += this.applyChanges(changes, cfg, addrs);
      return { written, bytes: 0 };
    } catch (e) {
      // What the maps hold is no longer known: the next sync re-reads them.
      this.mustReconcile = true;
      throw e instanceof DataPlaneError ? e : new DataPlaneError('EAPPLY', (e as Error).message);
    }
  }

  /** Times the maps were found to differ from what the plane wrote (and were repaired). */
  driftRepairs = 0;
  private mustReconcile = true;

  /** Per family: whether off-cluster traffic to a frontend masquerades (kube-proxy's rule), as the programs' fallback. */
  private masqFallback(cfg: ProxyConfig = this.config()): { 4: boolean; 6: boolean } {
    return { 4: cfg.masqueradeAll || detectsLocal(cfg, 4), 6: cfg.masqueradeAll || detectsLocal(cfg, 6) };
  }

  /** Whether the maps hold exactly what this plane wrote (null), by digest; else what differs. Throws DataPlaneError EREAD. */
  private verifyMaps(): string | null {
    const { fds } = this.lb!;
    return this.state.verify({
      services: dumpRaw(fds.rd_services, 'rd_services', SvcKeyCodec.size, SvcValCodec.size, this.io),
      backends: dumpRaw(fds.rd_backends, 'rd_backends', 4, BackendCodec.size, this.io),
      ranges: dumpRaw(fds.rd_src_ranges, 'rd_src_ranges', SrcRangeKeyCodec.size, 1, this.io),
    });
  }

  /**
   * Reads the maps back, adopts them, and writes whatever differs from the table (with `rewrite`,
   * every element of it).
   */
  private reconcileAll(table: ServiceTable, cfg: ProxyConfig, addrs: string[], rewrite = false): number {
    const lb = this.lb!;
    const st = this.state;
    const w = this.writes(lb.fds);
    w.reset();
    // The plane's picture of the maps is rebuilt from them unless it provably matches (a full
    // sync with nothing behind its back); what no frontend accounts for is deleted first, since
    // the writes below may reuse those keys.
    const k = readKernel(lb.fds, this.io);
    let written = 0;
    if (this.mustReconcile || st.drift(k) !== null) {
      st.adopt(k, w);
      written += w.flush();
      st.settle();
    }
    st.resetClaims();
    this.nodePortAddrs = addrs;
    const dirty = new Set<string>();
    for (const sp of allPorts(table)) st.claim(sp, cfg, addrs, dirty);
    for (const k of st.kernelKeys()) dirty.add(k);
    const fb = this.masqFallback(cfg);
    writeConfig(lb.fds.rd_config_map, primaryNodeIP(cfg, 4), primaryNodeIP(cfg, 6), (fb[4] ? CFG_F.MASQ_OFF_CLUSTER4 : 0) | (fb[6] ? CFG_F.MASQ_OFF_CLUSTER6 : 0), this.io);
    if (this.perPacket !== undefined || this.opts.maps?.perPacket === true) st.setPerPacket(fb);
    const gone: string[] = [];
    if (rewrite) st.rewriteBackends(w);
    for (const key of dirty) st.reconcile(key, w, gone, rewrite);
    st.reconcileClusterIPs(true, w, rewrite);
    written += w.flush();
    st.settle();
    this.mustReconcile = false;
    this.lastReconcile = this.now();
    this.destroyStale(gone);
    this.followPodDevices();
    return written;
  }

  /** Writes what the changes (and a change of NodePort addresses) touch. */
  private applyChanges(changes: readonly Change[], cfg: ProxyConfig, addrs: string[]): number {
    const st = this.state;
    const w = this.writes(this.lb!.fds);
    w.reset();
    const dirty = new Set<string>();
    if (addrs.join(',') !== this.nodePortAddrs.join(',')) {
      st.moveNodePorts(cfg, this.nodePortAddrs, addrs, dirty);
      this.nodePortAddrs = addrs;
    }
    for (const c of changes) {
      const { prev, next } = beforeAfter(c);
      if (prev !== undefined) st.unclaim(prev, cfg, this.nodePortAddrs, dirty);
      if (next !== undefined) st.claim(next, cfg, this.nodePortAddrs, dirty);
    }
    const gone: string[] = [];
    for (const key of dirty) st.reconcile(key, w, gone);
    st.reconcileClusterIPs(false, w);
    const written = w.flush();
    st.settle();
    this.destroyStale(gone);
    this.followPodDevices();
    return written;
  }

  private tracer: KernelTracer | undefined;
  private knobs: Knobs | undefined;

  /**
   * `rudder trace --kernel`: the packet through a dry-run copy of the per-packet program on the
   * live maps (see kernel-trace.ts). Throws TypeError when the per-packet path is off, DataPlaneError otherwise.
   */
  kernelTrace(p: TracePacket): KernelTrace {
    if (this.perPacket === undefined || this.knobs === undefined) throw new TypeError('the eBPF per-packet path is off on this node (no --devices): nothing to trace in the kernel');
    this.tracer ??= new KernelTracer(this.pinPath, this.knobs, this.sizes);
    return this.tracer.trace(p);
  }

  private ctSweep: NodeJS.Timeout | undefined;
  private ctStats: DataPlaneCounters['conntrack'];
  private ctFull = false;

  /** Sweeps rd_ct now and every ctSweepIntervalMs (never keeping the process alive). */
  private startCtSweep(): void {
    let deletedTotal = 0;
    const sweep = (): void => {
      const pp = this.perPacket;
      if (pp === undefined) return;
      try {
        const s = sweepCt(pp.obj.progFd('rd_ct_gc'), this.sizes.ct);
        deletedTotal += s.deleted;
        this.ctStats = { syn: s.syn, established: s.established, closing: s.closing, capacity: s.capacity, deletedTotal };
        const live = s.syn + s.established + s.closing;
        // Said once per crossing: an LRU map that is full evicts the oldest flows, which then break.
        if (!this.ctFull && live >= 0.9 * s.capacity) this.logger.warn('the eBPF connection tracking is nearly full: the oldest flows will be evicted; raise --bpf-ct-max', { entries: live, capacity: s.capacity });
        else if (this.ctFull && live < 0.8 * s.capacity) this.logger.info('the eBPF connection tracking has room again', { entries: live, capacity: s.capacity });
        this.ctFull = live >= 0.9 * s.capacity || (this.ctFull && live >= 0.8 * s.capacity);
      } catch (e) {
        this.logger.warn('could not sweep the eBPF connection tracking', { error: e as Error });
      }
    };
    sweep();
    this.ctSweep = setInterval(sweep, this.opts.ctSweepIntervalMs ?? 10_000);
    this.ctSweep.unref();
  }

  private podDevicesVersion = -1;
  private podDevicesRun: Promise<void> = Promise.resolve();
  /** Pod-facing interfaces rd_from_pod is attached to. */
  podDevices: string[] = [];

  /** With socket LB limited to the host namespace: the main table's direct routes, as last read. */
  private podRoutes: DirectRoute[] | null = null;
  private routeWatch: { close(): void } | undefined;

  /**
   * With socket LB limited to the host namespace, rd_from_pod translates the pods' own
   * connections, so it must sit on every local pod's interface, endpoint or not: the interfaces
   * routing into the cluster CIDRs, followed as pods come and go (`ip monitor route`).
   */
  private watchPodRoutes(): void {
    if (this.config().clusterCIDRs.length === 0) {
      this.logger.warn('without --cluster-cidr the pods\' interfaces are not known: with --socket-lb-host-namespace-only, only pods that are local endpoints get their connections to services translated');
    }
    this.routeWatch = watchIp('route', readDirectRoutes, (r) => `${r.dst} ${r.dev}`, (routes) => {
      this.podRoutes = routes;
      this.followPodDevices(true);
    }, { debounceMs: 20, onError: (e) => this.logger.warn('following the pods\' interfaces', { error: e }) });
  }

  close(): void {
    this.routeWatch?.close();
    this.routeWatch = undefined;
    if (this.ctSweep !== undefined) clearInterval(this.ctSweep);
    this.ctSweep = undefined;
  }

  /**
   * Keeps rd_from_pod on the interfaces local endpoints are routed through, when the set of local
   * endpoint addresses changed (and, with socket LB limited to the host namespace, on every local
   * pod's interface as routes change: `force`). Runs after the sync, off its path (one `ip route`
   * read), one run at a time; until it lands, replies of a new local pod reach the client through
   * the stack and rd_to_netdev, so nothing breaks meanwhile.
   */
  private followPodDevices(force = false): void {
    const pp = this.perPacket;
    if (pp === undefined || (!force && this.state.localIPsVersion === this.podDevicesVersion)) return;
    const version = this.state.localIPsVersion;
    this.podDevicesVersion = version;
    this.podDevicesRun = this.podDevicesRun.then(async () => {
      if (this.perPacket !== pp) return;
      try {
        const routes = this.podRoutes ?? await readDirectRoutes();
        const devices = devicesFor(this.state.localEndpointIPs(), routes, pp.devices);
        if (this.opts.hostNamespaceOnly === true) devices.push(...devicesWithin(routes, this.config().clusterCIDRs, pp.devices));
        this.podDevices = attachPodDevices(pp, this.pinPath, [...new Set(devices)].sort(), this.logger);
      } catch (e) {
        // Retried with the next change of local endpoints (or the next start).
        this.podDevicesVersion = -1;
        this.logger.warn('could not attach to the pod-facing interfaces', { error: e as Error });
      }
    });
  }

  /** Resolves once the pod-facing interfaces follow the last sync (tests). */
  podDevicesSettled(): Promise<void> {
    return this.podDevicesRun;
  }

  private syncWrites: SyncWrites | undefined;

  private writes(fds: MapFds): SyncWrites {
    this.syncWrites ??= new SyncWrites(fds, this.io);
    return this.syncWrites;
  }

  private destroyStale(gone: readonly string[]): void {
    const udp = gone.map(splitBackendKey).filter((b) => b.proto === IPPROTO.UDP);
    if (udp.length === 0 || this.stale === undefined) return;
    try {
      const n = this.stale.destroy(udp);
      if (n > 0) this.logger.info('closed connected UDP sockets of removed backends', { sockets: n, backends: udp.length });
    } catch (e) {
      this.logger.warn('could not close connected UDP sockets of removed backends', { error: e as Error });
    }
  }

  /**
   * The frontends as the maps hold them, with the service each belongs to and, where the entry
   * differs from what the table wants, `drift`. Throws DataPlaneError EREAD.
   */
  async programmed(): Promise<ProgrammedFrontend[]> {
    if (this.lb === undefined) await this.init();
    const k = readKernel(this.lb!.fds, this.io);
    const out: ProgrammedFrontend[] = [];
    const seen = new Set<string>();
    for (const fe of k.frontends) {
      const key = `${fe.addr}|${fe.port}|${protoName(fe.proto)}`;
      seen.add(`${key}#${fe.scope}`);
      const rec = this.state.recordOf(key);
      const backends = fe.backendIds.map((id) => {
        const b = k.backends.get(id);
        return b === undefined ? `missing-backend-${id}` : endpointId(b.addr, b.port);
      });
      const want = this.state.wanted(key, fe.scope);
      const drift = want === undefined ? 'not in the table' : differs(fe, k.backends, want);
      out.push({
        service: rec?.service.id ?? '', kind: rec?.kind ?? (fe.flags & SVC_F.NODEPORT ? 'nodePort' : 'unknown'), address: endpointId(fe.addr, fe.port), backends,
        ...(drift === '' ? {} : { drift }), id: fe.id, flags: flagNames(fe.flags), protocol: protoName(fe.proto), ...(fe.scope === SCOPE_HOST ? { scope: 'host' } : fe.scope === SCOPE_EXT ? { scope: 'external' } : {}),
      });
    }
    return out;
  }

  /** The programs' per-CPU counters, summed, for every programmed frontend and backend. Throws DataPlaneError EREAD. */
  async counters(): Promise<DataPlaneCounters> {
    if (this.lb === undefined) await this.init();
    const fds = this.lb!.fds;
    const cpus = possibleCpus();
    const feBuf = Buffer.alloc(SvcStatsCodec.size * cpus);
    const beBuf = Buffer.alloc(BeStatsCodec.size * cpus);
    const out: DataPlaneCounters = { frontends: [], backends: [], driftRepairs: this.driftRepairs, ...(this.ctStats === undefined ? {} : { conntrack: this.ctStats }) };
    for (const { id, rec } of this.state.frontends()) {
      const [connections, refused, dropped] = readPerCpu(fds.rd_svc_stats, id, 3, cpus, feBuf);
      out.frontends.push({ service: rec.service.id, kind: rec.kind, frontend: endpointId(rec.ip, rec.port), protocol: rec.protocol, connections: Number(connections), refused: Number(refused), dropped: Number(dropped) });
    }
    for (const [key, id] of this.state.backendIds.entries()) {
      const { ip, port, proto } = splitBackendKey(key);
      const [connections] = readPerCpu(fds.rd_be_stats, id, 1, cpus, beBuf);
      out.backends.push({ backend: endpointId(ip, port), protocol: protoName(proto), connections: Number(connections) });
    }
    return out;
  }

  /** Detaches every hook and removes the pinned maps. Idempotent. Throws DataPlaneError ECLEANUP. */
  async cleanup(): Promise<void> {
    this.close();
    this.stale?.close();
    this.stale = undefined;
    this.tracer?.close();
    this.tracer = undefined;
    this.perPacket?.close();
    this.perPacket = undefined;
    this.lb?.close();
    this.lb = undefined;
    this.syncWrites = undefined;
    removePins(this.pinPath);
  }
}

/** What differs between a kernel entry and the wanted one, "" when nothing does. */
function differs(fe: KernelFrontend, backends: ReadonlyMap<number, { addr: string; port: number; proto: number; flags: number }>, want: Entry): string {
  if (fe.flags !== want.flags) return `flags ${flagNames(fe.flags).join(',') || '-'}, want ${flagNames(want.flags).join(',') || '-'}`;
  const have = fe.backendIds.map((id) => {
    const b = backends.get(id);
    return b === undefined ? `missing-${id}` : backendKey(b.addr, b.port, b.proto, (b.flags & BE_F.LOCAL) !== 0);
  });
  if (have.length !== want.backends.length || have.some((b, i) => b !== want.backends[i])) return `backends differ (${have.length} programmed, ${want.backends.length} wanted)`;
  return '';
}

/**
 * The node's ephemeral port range (net.ipv4.ip_local_port_range of this network namespace): SNAT
 * ports stay out of it. [0, 0] (nothing left out) if it cannot be read.
 */
function ephemeralPorts(logger: Logger): [number, number] {
  try {
    const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (Number.isInteger(lo) && Number.isInteger(hi) && lo! >= 1 && hi! <= 65535 && lo! <= hi!) return [lo!, hi!];
  } catch (e) {
    logger.warn('could not read net.ipv4.ip_local_port_range: SNAT ports may collide with the node\'s own connections', { error: e as Error });
  }
  return [0, 0];
}

/** Per-CPU maps hold one value per possible CPU (/sys/devices/system/cpu/possible, e.g. "0-1"). */
function possibleCpus(): number {
  let n = 0;
  for (const part of readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim().split(',')) {
    const [a, b] = part.split('-').map(Number);
    n = Math.max(n, (b ?? a ?? 0) + 1);
  }
  return n;
}



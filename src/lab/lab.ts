// A running lab: its namespaces, its per-node cgroups, its processes, probes from inside it, and
// teardown that always happens (explicit destroy, creation failure, process exit,
// SIGINT/SIGTERM/SIGHUP).

import { spawnSync } from 'node:child_process';
import { createLogger, type Logger } from '../observe/log.js';
import { exec, execOk, type ExecOptions, type ExecResult } from '../util/exec.js';
import { buildTopology, podVethName } from './build.js';
import { BPF_FS, findCgroup2Mount, listPinDirs, removePinDirs, RunCgroups } from './cgroup.js';
import { LabError } from './errors.js';
import { register, unregister } from './exit.js';
import { freeRunId, removeLeftovers } from './leftovers.js';
import { deleteNamespace, deleteNamespaceSync, isRunId, listLabNamespaces, nsName, runPrefix } from './netns.js';
import { placedArgv, type Placement } from './place.js';
import {
  curlArgv, findProgram, parseCurlResult, parseUdpResult, TCP_PROBE_PORT, udpArgv,
  type CurlOptions, type PingResult, type ProbeResult, type UdpOptions,
} from './probes.js';
import { ProcessGroup, startPodServer, type LabProcess, type SpawnOptions } from './servers.js';
import { assertLabDestination, FABRIC_ROLE, podGateway, validateTopology, type PodSpec, type Topology } from './topology.js';

export interface LabOptions {
  logger?: Logger;
  /** 4 hex digits; a fresh one by default. Creation fails if namespaces of this run exist. */
  runId?: string;
  /**
   * Destroy this lab (synchronously) on SIGINT/SIGTERM/SIGHUP. Default true. Set false when the
   * caller handles those signals and tears down itself; the lab is still removed on process exit,
   * and still on a signal when no other handler for it is left.
   */
  handleSignals?: boolean;
  /**
   * Give every node a cgroup v2 directory (`<cgroup2 mount>/rd-<run>/<node>`) and start the
   * processes of the node and of its pods inside it, where eBPF socket programs can be attached.
   * Default true; without a cgroup2 mount the lab runs without cgroups and logs one warning.
   */
  cgroups?: boolean;
}

export interface LabExecOptions extends ExecOptions {
  /** Enter with `nsenter --net`, keeping the root mount namespace (see SpawnOptions.keepMounts). */
  keepMounts?: boolean;
}

export type RoleKind = 'fabric' | 'node' | 'client' | 'pod';

export interface RoleInfo {
  role: string;
  kind: RoleKind;
  ns: string;
  /** Node-network address (node, client) or pod IP; empty for the fabric. */
  ip: string;
  /** Human-readable details: pod CIDR and gateway, pod ports, bridge. */
  detail: string;
  /** The cgroup its processes run in (its node's for nodes and pods), if any. */
  cgroup?: string;
}

type State = 'creating' | 'ready' | 'destroying' | 'destroyed';

export class Lab {
  readonly runId: string;
  readonly topology: Topology;
  readonly handleSignals: boolean;
  private readonly logger: Logger;
  private readonly procs: ProcessGroup;
  private readonly kinds = new Map<string, RoleKind>();
  private readonly created = new Set<string>();
  private readonly servers = new Map<string, LabProcess>();
  /** null when the lab runs without cgroups; `noCgroups` says why. */
  private readonly cgroups: RunCgroups | null;
  private readonly noCgroups: string;
  private state: State = 'creating';
  private destroying: Promise<void> | null = null;

  private constructor(topology: Topology, runId: string, logger: Logger, handleSignals: boolean, cgroups: RunCgroups | null, noCgroups: string) {
    this.topology = topology;
    this.runId = runId;
    this.logger = logger;
    this.handleSignals = handleSignals;
    this.cgroups = cgroups;
    this.noCgroups = noCgroups;
    this.procs = new ProcessGroup(logger);
    this.kinds.set(FABRIC_ROLE, 'fabric');
    for (const n of topology.nodes) this.kinds.set(n.name, 'node');
    for (const c of topology.clients) this.kinds.set(c.name, 'client');
    for (const p of topology.pods) this.kinds.set(p.name, 'pod');
  }

  /**
   * Validates the topology, then creates it: the node cgroups first, then the namespaces. Throws
   * LabError ETOPOLOGY (nothing created) or ECREATE (everything created so far has been removed
   * again; `cause` is the failing command).
   */
  static async create(topology: Topology, opts: LabOptions = {}): Promise<Lab> {
    validateTopology(topology);
    const mount = opts.cgroups === false ? null : findCgroup2Mount();
    const runId = opts.runId ?? (await freeRunId(mount));
    if (!isRunId(runId)) throw new LabError('ETOPOLOGY', `run id ${JSON.stringify(runId)} must be 4 hex digits`);
    const cgroups = mount === null ? null : new RunCgroups(mount, runId);
    // Stale pins would seed a new agent's state with an old run's services.
    const existing = [...(await listLabNamespaces(runId)), ...(cgroups?.exists() === true ? [cgroups.parent] : []), ...listPinDirs(runId)];
    if (existing.length > 0) throw new LabError('ECREATE', `run id ${runId} is in use: ${existing.join(', ')} exist (rudder lab down --run ${runId})`);
    const logger = (opts.logger ?? createLogger()).child({ lab: runId });
    const noCgroups = opts.cgroups === false ? 'it was created with cgroups: false' : 'cgroup v2 is not mounted (no cgroup2 entry in /proc/self/mountinfo)';
    if (cgroups === null && opts.cgroups !== false) logger.warn('lab runs without node cgroups: eBPF socket programs cannot be scoped to a node', { reason: noCgroups });
    const lab = new Lab(structuredClone(topology), runId, logger, opts.handleSignals ?? true, cgroups, noCgroups);
    register(lab);
    const started = Date.now();
    try {
      cgroups?.create(lab.topology.nodes.map((n) => n.name));
      await buildTopology({
        topology: lab.topology,
        logger: lab.logger,
        ns: (role) => lab.ns(role),
        track: (ns) => { lab.created.add(ns); },
        checkAlive: () => lab.checkAlive(),
      });
    } catch (e) {
      lab.logger.error('lab creation failed, removing what was created', { error: e });
      await lab.destroy();
      if (e instanceof LabError && e.code === 'EDESTROYED') throw e;
      throw new LabError('ECREATE', `lab ${runId}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    lab.checkAlive();
    lab.state = 'ready';
    lab.logger.info('lab created', { namespaces: lab.created.size, ms: Date.now() - started });
    return lab;
  }

  /**
   * Removes every lab run on the machine (or only run `runId`'s), including labs that are still
   * running in other processes: kills the processes in the runs' cgroups and removes those, removes
   * the namespaces (killing the processes in them), then the BPF pin directories. Resolves with
   * what was removed: namespace names, then cgroup and pin directories (absolute paths).
   */
  static cleanLeftovers(opts: { runId?: string; logger?: Logger } = {}): Promise<string[]> {
    return removeLeftovers(opts.runId, opts.logger ?? createLogger());
  }

  /** Namespace name of a role (node, pod, client or "fabric"). Throws LabError EROLE if unknown. */
  ns(role: string): string {
    if (!this.kinds.has(role)) throw new LabError('EROLE', `lab ${this.runId} has no role ${JSON.stringify(role)} (roles: ${[...this.kinds.keys()].join(', ')})`);
    return nsName(this.runId, role);
  }

  /** Every role with its namespace, address, cgroup and details, in creation order. */
  roles(): RoleInfo[] {
    const t = this.topology;
    const withCgroup = (r: RoleInfo): RoleInfo => {
      const cgroup = this.cgroupOf(r.role);
      return cgroup === undefined ? r : { ...r, cgroup };
    };
    const all: RoleInfo[] = [
      { role: FABRIC_ROLE, kind: 'fabric', ns: this.ns(FABRIC_ROLE), ip: '', detail: `bridge br0, node network ${t.nodeNetwork}` },
      ...t.nodes.map((n): RoleInfo => ({ role: n.name, kind: 'node', ns: this.ns(n.name), ip: n.ip, detail: `podCIDR ${n.podCIDR} gw ${podGateway(n)}${n.zone ? ` zone ${n.zone}` : ''}` })),
      ...t.clients.map((c): RoleInfo => ({ role: c.name, kind: 'client', ns: this.ns(c.name), ip: c.ip, detail: 'external client' })),
      ...t.pods.map((p, i): RoleInfo => ({ role: p.name, kind: 'pod', ns: this.ns(p.name), ip: p.ip, detail: `on ${p.node} (${podVethName(p.name, i)}) tcp ${p.ports.join(',') || '-'} udp ${p.udpPorts.join(',') || '-'}` })),
    ];
    return all.map(withCgroup);
  }

  kindOf(role: string): RoleKind | undefined {
    return this.kinds.get(role);
  }

  /**
   * Absolute path of a node's cgroup directory, where its processes and its pods' run and where a
   * data plane attaches its socket programs. Throws LabError EROLE if `node` is not a node, ECGROUP
   * if the lab has no cgroups.
   */
  cgroup(node: string): string {
    if (this.kinds.get(node) !== 'node') throw new LabError('EROLE', `lab ${this.runId} has no node ${JSON.stringify(node)} (nodes: ${this.topology.nodes.map((n) => n.name).join(', ')})`);
    if (this.cgroups === null) throw new LabError('ECGROUP', `lab ${this.runId} has no cgroup for node ${node}: ${this.noCgroups}`);
    return this.cgroups.node(node);
  }

  /**
   * The cgroup a role's processes run in: its own for a node, its node's for a pod; undefined for
   * clients, the fabric, and in a lab without cgroups. Throws LabError EROLE for an unknown role.
   */
  cgroupOf(role: string): string | undefined {
    this.ns(role);
    const kind = this.kinds.get(role);
    if (this.cgroups === null) return undefined;
    if (kind === 'node') return this.cgroups.node(role);
    if (kind === 'pod') return this.cgroups.node(this.pod(role).node);
    return undefined;
  }

  /** Where an agent on `node` pins its BPF maps and links; removed with the lab. Throws LabError EROLE. */
  bpfPinPath(node: string): string {
    if (this.kinds.get(node) !== 'node') throw new LabError('EROLE', `lab ${this.runId} has no node ${JSON.stringify(node)}`);
    return `${BPF_FS}/${nsName(this.runId, node)}`;
  }

  /** Node-network IP of a node or client, or a pod's IP. Throws LabError EROLE. */
  ip(role: string): string {
    const r = this.topology.nodes.find((n) => n.name === role) ?? this.topology.clients.find((c) => c.name === role) ?? this.topology.pods.find((p) => p.name === role);
    if (r === undefined) throw new LabError('EROLE', `lab ${this.runId} has no node, client or pod ${JSON.stringify(role)}`);
    return r.ip;
  }

  pod(name: string): PodSpec {
    const p = this.topology.pods.find((x) => x.name === name);
    if (p === undefined) throw new LabError('EROLE', `lab ${this.runId} has no pod ${JSON.stringify(name)}`);
    return p;
  }

  /**
   * Runs argv inside a role's namespace, and for a node or pod inside the node's cgroup from its
   * first instruction; resolves with its exit code and output (see util/exec). Throws LabError
   * EROLE for an unknown role.
   */
  exec(role: string, argv: readonly string[], opts: LabExecOptions = {}): Promise<ExecResult> {
    return exec(placedArgv(this.place(role, opts.keepMounts), argv), opts);
  }

  /** Like exec, but a non-zero exit throws ExecError. */
  execOk(role: string, argv: readonly string[], opts: LabExecOptions = {}): Promise<ExecResult> {
    return execOk(placedArgv(this.place(role, opts.keepMounts), argv), opts);
  }

  /** Starts a long-running process placed as exec places it; it is stopped on destroy. */
  spawn(role: string, argv: readonly string[], opts?: SpawnOptions): LabProcess {
    this.checkAlive();
    return this.procs.spawn(this.place(role), argv, opts);
  }

  /** Stops one process started with spawn (SIGTERM, then SIGKILL after graceMs). */
  stopProcess(p: LabProcess, graceMs?: number): Promise<void> {
    return this.procs.stop(p, graceMs);
  }

  /**
   * Starts the server of every pod (or of the pods named) that is not running yet, and waits
   * until each listens. Throws LabError ESERVER with the server's output if one fails.
   */
  async startServers(pods?: string[]): Promise<void> {
    this.checkAlive();
    const specs = pods === undefined ? this.topology.pods : pods.map((n) => this.pod(n));
    await Promise.all(specs.map(async (p) => {
      if (this.servers.get(p.name)?.running()) return;
      const proc = await startPodServer(this.procs, this.place(p.name), p);
      this.servers.set(p.name, proc);
    }));
    this.logger.info('pod servers ready', { pods: specs.length });
  }

  /** Stops the servers of the pods named (all by default), e.g. to test an endpoint going away. */
  async stopServers(pods?: string[]): Promise<void> {
    const names = pods ?? [...this.servers.keys()];
    await Promise.all(names.map(async (n) => {
      const p = this.servers.get(n);
      this.servers.delete(n);
      if (p !== undefined) await this.procs.stop(p);
    }));
  }

  /** HTTP GET from inside a role's namespace. Never throws for network outcomes: see ProbeResult. */
  async curl(from: string, url: string, opts: CurlOptions = {}): Promise<ProbeResult> {
    const r = await this.exec(from, curlArgv(url, opts), { timeoutMs: (opts.timeoutMs ?? 2000) + 5000 });
    return parseCurlResult(r);
  }

  /** One UDP datagram from inside a role's namespace and the pod server's echo. Never throws for network outcomes. */
  async udp(from: string, ip: string, port: number, payload: string, opts: UdpOptions = {}): Promise<ProbeResult> {
    const r = await this.exec(from, udpArgv(ip, port, payload, opts), { timeoutMs: (opts.timeoutMs ?? 2000) + 5000 });
    return parseUdpResult(r);
  }

  /**
   * Is `ip` reachable from a role's namespace? Uses ICMP echo where `ping` is installed, otherwise
   * a TCP connect to port 9 (a refusal proves the host answered).
   */
  async ping(from: string, ip: string, opts: { timeoutMs?: number } = {}): Promise<PingResult> {
    const timeoutMs = opts.timeoutMs ?? 2000;
    if (findProgram('ping') !== null) {
      const r = await this.exec(from, ['ping', '-n', '-q', '-c', '1', '-W', String(Math.max(1, Math.ceil(timeoutMs / 1000))), ip], { timeoutMs: timeoutMs + 5000 });
      return { reachable: r.code === 0, method: 'icmp', message: (r.stdout + r.stderr).trim().split('\n').pop() ?? '' };
    }
    const r = await this.curl(from, `http://${ip}:${TCP_PROBE_PORT}/`, { timeoutMs });
    const reachable = r.ok || r.kind === 'refused' || r.kind === 'reset' || r.kind === 'bad-reply' || r.kind === 'http';
    return { reachable, method: 'tcp', message: r.ok ? 'connected' : `${r.kind}: ${r.message}` };
  }

  /** Replaces a route in a role's namespace; `dst` must be inside the lab's ranges. Throws LabError EUNSAFE or ExecError. */
  async setRoute(role: string, dst: string, via: string): Promise<void> {
    assertLabDestination(this.topology, dst);
    await execOk(['ip', '-n', this.ns(role), 'route', 'replace', dst, 'via', via]);
  }

  /** Namespaces of this run that exist right now. */
  listNamespaces(): Promise<string[]> {
    return listLabNamespaces(this.runId);
  }

  isAlive(): boolean {
    return this.state === 'creating' || this.state === 'ready';
  }

  /** Stops every process and removes every namespace of this run. Idempotent; never throws. */
  destroy(): Promise<void> {
    if (this.state === 'destroyed') return Promise.resolve();
    if (this.destroying !== null) return this.destroying;
    this.state = 'destroying';
    this.destroying = this.teardown().finally(() => {
      this.state = 'destroyed';
      unregister(this);
    });
    return this.destroying;
  }

  /** Synchronous destroy for exit and signal handlers: SIGKILLs processes, removes cgroups, namespaces, pins. */
  destroySync(): void {
    if (this.state === 'destroyed') return;
    this.state = 'destroyed';
    this.procs.killAllSync();
    try {
      this.cgroups?.removeSync();
    } catch {
      // an exit handler must not throw; `rudder lab clean` removes what is left
    }
    const names = new Set(this.created);
    const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 5000 });
    for (const line of (list.stdout ?? '').split('\n')) {
      const n = line.trim().split(/\s+/)[0] ?? '';
      if (n.startsWith(runPrefix(this.runId))) names.add(n);
    }
    for (const ns of names) deleteNamespaceSync(ns);
    removePinDirs(this.runId);
    this.created.clear();
    unregister(this);
  }

  private async teardown(): Promise<void> {
    const started = Date.now();
    try {
      await this.procs.stopAll(1000);
      this.servers.clear();
      // Whatever the lab's processes forked, and clients still running, are in the node cgroups.
      await this.removeCgroups();
      await Promise.all([...this.created].map((ns) => deleteNamespace(ns)));
      // Sweep by prefix too: a namespace whose creation raced with destroy is not in `created` yet.
      for (let attempt = 0; attempt < 3; attempt++) {
        const left = await listLabNamespaces(this.runId);
        if (left.length === 0) break;
        await Promise.all(left.map((ns) => deleteNamespace(ns)));
      }
      removePinDirs(this.runId, (path, e) => this.logger.warn('could not remove BPF pin directory; run `rudder lab clean`', { path, error: e }));
      const left = await listLabNamespaces(this.runId);
      if (left.length > 0) this.logger.warn('namespaces left behind; run `rudder lab clean`', { namespaces: left });
      else this.logger.info('lab removed', { ms: Date.now() - started });
    } catch (e) {
      this.logger.error('lab teardown failed; run `rudder lab clean`', { error: e });
    }
    this.created.clear();
  }

  private async removeCgroups(): Promise<void> {
    const cgroups = this.cgroups;
    if (cgroups === null) return;
    try {
      await cgroups.remove();
    } catch (e) {
      this.logger.warn('could not remove cgroups', { cgroup: cgroups.parent, error: e });
    }
    if (cgroups.exists()) this.logger.warn('cgroup left behind; run `rudder lab clean`', { cgroup: cgroups.parent });
  }

  private place(role: string, keepMounts?: boolean): Placement {
    return { ns: this.ns(role), cgroup: this.cgroupOf(role), keepMounts };
  }

  private checkAlive(): void {
    if (!this.isAlive()) throw new LabError('EDESTROYED', `lab ${this.runId} was destroyed`);
  }
}

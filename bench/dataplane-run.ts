// One measurement of the data plane benchmark (bench/dataplane.ts runs each in its own process, so
// memory figures and kernel state start from nothing): one data plane, N services x 4 endpoints,
// through the agent's own path (tracker, Syncer, data plane).
//   - first full sync: the Syncer's first sync (model build + diff + the plane's whole load);
//   - periodic full sync: the Syncer's hourly full sync over the programmed state (model build +
//     diff + a reconcile that, for ebpf, reads every map back and finds nothing to write);
//   - one EndpointSlice change at a time: the event handler (tracker) plus the sync the runner
//     fires, until the kernel holds the change. "Kernel" is the time spent in the kernel tool's
//     process (iptables-restore, nft) or, for ebpf, in the map syscalls (bpf(2) through koffi);
//     Rudder's share (model + render or map state) is the rest.
// The scratch kernel state carries a lab run id (`rd-<run>-bench` namespace; for ebpf a
// `rd-<run>/bench` cgroup, never the machine's root, and pins under /sys/fs/bpf/rd-<run>-bench)
// and is removed at the end, on failure and on signals; the parent removes it again by run id.

import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import type { DataPlane } from '../src/dataplane/dataplane.js';
import { BPF_FS, findCgroup2Mount, RunCgroups } from '../src/lab/cgroup.js';
import { nsName } from '../src/lab/netns.js';
import { createLogger } from '../src/observe/log.js';
import { Syncer } from '../src/sync/syncer.js';
import { Tracker } from '../src/sync/tracker.js';
import { exec, execOk, type ExecFn, type ExecOptions } from '../src/util/exec.js';
import { benchConfig, benchService, benchSlice } from './fixtures.js';

export const PLANES = ['iptables-legacy', 'iptables-nft', 'nftables', 'ebpf'] as const;
export type Plane = (typeof PLANES)[number];

/** Milliseconds, split into Rudder's share and the kernel's (tool process or map syscalls). */
export interface Split {
  ms: number;
  kernelMs: number;
  /** Kernel tool runs (netfilter planes) or bpf(2) calls (ebpf). */
  calls: number;
  /** CPU time this process used meanwhile (user + system), ms: wall time well above it is waiting for a CPU or a child. */
  cpuMs: number;
}

export interface PlaneResult {
  plane: Plane;
  services: number;
  /** Loading and attaching the programs (ebpf) or creating the base tables. */
  initMs: number;
  firstFull: Split;
  periodicFull: Split;
  /** Elements the periodic full sync wrote (0: it found nothing to change). */
  periodicWritten: number;
  changes: Split[];
  /**
   * ebpf: single changes that arrive once the plane's read-back interval (30 s by default) has
   * passed since its last reconcile, as one does after a quiet spell: the plane re-reads and
   * reconciles every map before writing the change. null for the other planes.
   */
  changesAfterQuiet: Split[] | null;
  /** Per change: bytes handed to the kernel tool, or map elements written (ebpf). */
  transaction: number[];
  /** ebpf: frontends read back with drift after the changes (0 expected). */
  drift: number | null;
  /** After the load and the periodic sync, after a GC (the process held tracker, table and plane). */
  memory: { rssMiB: number; heapUsedMiB: number; externalMiB: number };
  /** Garbage collections during the one-change loop: how many, their total and longest pause, ms. */
  gcDuringChanges: { count: number; totalMs: number; maxMs: number };
}

/** Changes measured after a quiet spell, and how long the spell is (past the plane's default 30 s read-back interval). */
const QUIET_CHANGES = 3;
const QUIET_MS = 31_000;

const now = (): bigint => process.hrtime.bigint();
const msSince = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

/** Time and calls spent in the kernel, accumulated by the instrumented exec or bpf(2) wrappers. */
class KernelClock {
  ms = 0;
  calls = 0;
  private cpu = process.cpuUsage();
  reset(): void {
    this.ms = 0;
    this.calls = 0;
    this.cpu = process.cpuUsage();
  }
  /** Rudder's and the kernel's share of something that took `ms` in all. */
  split(ms: number): Split {
    const c = process.cpuUsage(this.cpu);
    return { ms, kernelMs: this.ms, calls: this.calls, cpuMs: (c.user + c.system) / 1000 };
  }
}

/**
 * Wraps every function of libbpf's map operations so the time in them is counted. About 0.1 us of
 * timer per call lands on the kernel's side; a map operation costs 1.1-1.3 us. A callback handed
 * to an operation (a batch lookup decodes each chunk in one) is Rudder's time, not the kernel's:
 * it is subtracted, and each of its calls counts as one more syscall (one per chunk).
 */
async function instrumentMapCalls(clock: KernelClock): Promise<void> {
  const { bpfMap } = await import('../src/dataplane/ebpf/libbpf.js');
  const ops = bpfMap as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const name of Object.keys(ops)) {
    const f = ops[name]!;
    ops[name] = (...a: unknown[]) => {
      let inCallbacks = 0n;
      let chunks = 0;
      const args = a.map((x) => (typeof x !== 'function' ? x : (...b: unknown[]) => {
        const c0 = process.hrtime.bigint();
        chunks++;
        try {
          return (x as (...b: unknown[]) => unknown)(...b);
        } finally {
          inCallbacks += process.hrtime.bigint() - c0;
        }
      }));
      const t0 = process.hrtime.bigint();
      try {
        return f(...args);
      } finally {
        clock.ms += Number(process.hrtime.bigint() - t0 - inCallbacks) / 1e6;
        clock.calls += Math.max(1, chunks);
      }
    };
  }
}

interface Scratch {
  dataplane: DataPlane & { lastTransaction?: string };
  /** Moves the data plane's own clock forward (ebpf: its read-back interval); absent elsewhere. */
  advanceClock?: (ms: number) => void;
  /** Removes what the scratch setup created (idempotent, synchronous: it also runs on exit). */
  remove(): void;
}

/** The namespace of a netfilter plane's run; the ebpf run's cgroup node and pin directory. */
export function scratchNames(runId: string): { ns: string; cgroupNode: string; pinPath: string } {
  return { ns: nsName(runId, 'bench'), cgroupNode: 'bench', pinPath: join(BPF_FS, nsName(runId, 'bench')) };
}

async function netfilterScratch(plane: Exclude<Plane, 'ebpf'>, runId: string, clock: KernelClock): Promise<Scratch> {
  const { ns } = scratchNames(runId);
  const remove = (): void => {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  };
  await execOk(['ip', 'netns', 'add', ns]);
  const nsExec: ExecFn = async (argv: readonly string[], o?: ExecOptions) => {
    const t0 = now();
    try {
      return await exec(['ip', 'netns', 'exec', ns, ...argv], o);
    } finally {
      clock.ms += msSince(t0);
      clock.calls++;
    }
  };
  const logger = createLogger({ level: 'warn' });
  if (plane === 'nftables') {
    const { NftablesDataPlane } = await import('../src/dataplane/nftables/index.js');
    return { dataplane: new NftablesDataPlane({ config: benchConfig, logger, exec: nsExec }), remove };
  }
  const { IptablesDataPlane } = await import('../src/dataplane/iptables/index.js');
  return { dataplane: new IptablesDataPlane({ config: benchConfig, logger, exec: nsExec, backend: plane === 'iptables-legacy' ? 'legacy' : 'nft' }), remove };
}

async function ebpfScratch(runId: string, clock: KernelClock): Promise<Scratch> {
  const mount = findCgroup2Mount();
  if (mount === null) throw new Error('no cgroup2 mount in /proc/self/mountinfo: the ebpf plane attaches to a cgroup v2');
  const { cgroupNode, pinPath } = scratchNames(runId);
  // An empty cgroup of its own: the programs attached there translate no process's connections.
  const cgroups = new RunCgroups(mount, runId);
  cgroups.create([cgroupNode]);
  const remove = (): void => {
    // Unpinning the links detaches the programs; the cgroup goes once nothing is attached to it.
    rmSync(pinPath, { recursive: true, force: true });
    cgroups.removeSync();
  };
  try {
    await instrumentMapCalls(clock);
    const { EbpfDataPlane } = await import('../src/dataplane/ebpf/index.js');
    let offsetMs = 0;
    // The agent's defaults (reconcile interval included); only the clock can be moved on.
    const dataplane = new EbpfDataPlane({ config: benchConfig, logger: createLogger({ level: 'warn' }), cgroupPath: cgroups.node(cgroupNode), pinPath, now: () => Date.now() + offsetMs });
    return { dataplane, remove, advanceClock: (ms) => { offsetMs += ms; } };
  } catch (e) {
    remove();
    throw e;
  }
}

/** Measures one plane at one size. Throws on any failure; the scratch state is removed either way. */
export async function measurePlane(plane: Plane, n: number, changes: number, runId: string): Promise<PlaneResult> {
  const clock = new KernelClock();
  const scratch = plane === 'ebpf' ? await ebpfScratch(runId, clock) : await netfilterScratch(plane, runId, clock);
  process.on('exit', scratch.remove);
  try {
    const dp = scratch.dataplane;
    let t0 = now();
    await dp.init();
    const initMs = msSince(t0);

    const tracker = new Tracker('node-1');
    tracker.handle({ type: 'synced', kind: 'Service', keys: [] });
    tracker.handle({ type: 'synced', kind: 'EndpointSlice', keys: [] });
    for (let i = 0; i < n; i++) {
      tracker.handle({ type: 'upsert', object: benchService(i) });
      tracker.handle({ type: 'upsert', object: benchSlice(i, 0) });
    }
    // The Syncer's clock: advanced by an hour to make it run its periodic full sync.
    let offsetMs = 0;
    // What each transaction wrote, seen from the Syncer's call.
    let lastWritten = -1;
    const apply = dp.apply.bind(dp);
    dp.apply = async (c, table, o) => {
      const r = await apply(c, table, o);
      lastWritten = r.written;
      return r;
    };
    const syncer = new Syncer({ tracker, dataplane: dp, config: () => benchConfig, logger: createLogger({ level: 'warn' }), fullSyncIntervalMs: 3_600_000, now: () => Date.now() + offsetMs });

    clock.reset();
    t0 = now();
    const first = await syncer.sync();
    const firstFull = clock.split(msSince(t0));
    if (first?.full !== true || first.changes < n) throw new Error(`expected a full first sync of ${n} services, got ${JSON.stringify(first)}`);

    offsetMs += 3_600_000;
    clock.reset();
    t0 = now();
    const periodic = await syncer.sync();
    const periodicFull = clock.split(msSince(t0));
    const periodicWritten = lastWritten;
    if (periodic?.full !== true || periodic.changes !== 0) throw new Error(`expected a full periodic sync without changes, got ${JSON.stringify(periodic)}`);

    (globalThis as { gc?: () => void }).gc?.();
    const mem = process.memoryUsage();
    const memory = { rssMiB: mem.rss / 1048576, heapUsedMiB: mem.heapUsed / 1048576, externalMiB: (mem.external + mem.arrayBuffers) / 1048576 };

    const gc = { count: 0, totalMs: 0, maxMs: 0 };
    const gcObserver = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        gc.count++;
        gc.totalMs += e.duration;
        gc.maxMs = Math.max(gc.maxMs, e.duration);
      }
    });
    gcObserver.observe({ entryTypes: ['gc'] });
    const gens = new Map<number, number>();
    /** One EndpointSlice change through the event handler and the sync the runner fires. */
    const oneChange = async (c: number): Promise<Split> => {
      const i = (c * 7919) % n;
      const gen = (gens.get(i) ?? 0) + 1;
      gens.set(i, gen);
      clock.reset();
      t0 = now();
      tracker.handle({ type: 'upsert', object: benchSlice(i, gen) });
      const r = await syncer.sync();
      const cost = clock.split(msSince(t0));
      if (r?.full !== false || r.changes !== 1) throw new Error(`expected a partial sync of one change, got ${JSON.stringify(r)}`);
      return cost;
    };
    const costs: Split[] = [];
    const transaction: number[] = [];
    for (let c = 0; c < changes; c++) {
      costs.push(await oneChange(c));
      transaction.push(plane === 'ebpf' ? lastWritten : (dp.lastTransaction ?? '').length);
    }
    // Entries are delivered asynchronously (and the loop above rarely yields): let them arrive.
    await new Promise((r) => setTimeout(r, 100));
    gcObserver.disconnect();

    let changesAfterQuiet: Split[] | null = null;
    if (scratch.advanceClock !== undefined) {
      changesAfterQuiet = [];
      for (let k = 0; k < QUIET_CHANGES; k++) {
        scratch.advanceClock(QUIET_MS);
        changesAfterQuiet.push(await oneChange(changes + k));
      }
    }

    let drift: number | null = null;
    if (plane === 'ebpf') {
      const programmed = await dp.programmed();
      drift = programmed.filter((f) => f.drift !== undefined).length;
    }
    return { plane, services: n, initMs, firstFull, periodicFull, periodicWritten, changes: costs, changesAfterQuiet, transaction, drift, memory, gcDuringChanges: gc };
  } finally {
    try {
      // The netfilter planes' state goes with the namespace; the ebpf plane closes its fds.
      if (plane === 'ebpf') await scratch.dataplane.cleanup();
    } finally {
      scratch.remove();
      process.off('exit', scratch.remove);
    }
  }
}

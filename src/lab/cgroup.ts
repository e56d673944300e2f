// Per-node cgroup v2 directories of a lab run, and the BPF pin directories of its agents.
//
// eBPF socket programs (cgroup/connect4 and friends) attach to a cgroup and translate the
// connections of every process in it, whatever its network namespace. So each lab node gets
// `<cgroup2 mount>/rd-<run>/<node>`, and every process of the node and of its pods starts inside
// it. Everything here refuses to write to a cgroup that is not inside a `rd-<run>` directory: a
// program attached to, or a process moved into, the machine's own cgroups would reach far beyond
// the lab.

import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, relative, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LabError } from './errors.js';
import { LAB_PREFIX, runName, runPrefix } from './netns.js';

/** Where BPF objects are pinned; a lab agent pins under `<BPF_FS>/rd-<run>-<node>`. */
export const BPF_FS = '/sys/fs/bpf';

const RUN_DIR = new RegExp(`^${LAB_PREFIX}[0-9a-f]{4}$`);
const PIN_DIR = new RegExp(`^${LAB_PREFIX}[0-9a-f]{4}-`);

import { findCgroup2Mount } from '../util/mounts.js';

export { findCgroup2Mount, parseCgroup2Mount } from '../util/mounts.js';

/** Throws LabError EUNSAFE unless `dir` is a run's cgroup directory `<mount>/rd-<run>` or below it. */
export function assertRunCgroup(mount: string, dir: string): void {
  const rel = relative(mount, dir);
  const first = rel.split(sep)[0] ?? '';
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel) || !RUN_DIR.test(first)) {
    throw new LabError('EUNSAFE', `${dir} is not inside a lab run's cgroup (${mount}/${LAB_PREFIX}<run>)`);
  }
}

/**
 * Joins the cgroup named by $0, then execs the rest of argv: the program is already inside the
 * cgroup when it starts, and keeps the spawned pid, so signals reach it. The pid is written from
 * here, outside `ip netns exec`, because that remounts /sys and hides cgroupfs. The text is a
 * constant: the path and argv arrive as positional arguments, never as shell text.
 */
const JOIN_CGROUP_SCRIPT = 'echo $$ > "$0/cgroup.procs" || exit 125; exec "$@"';

const NODE_NAME = /^[a-z0-9-]+$/;

/**
 * argv that runs `argv` inside a lab node's cgroup, `<cgroup2 mount>/rd-<run>/<node>`. The mount
 * is looked up again each time (a few microseconds) so that no stale or foreign path can pass.
 * Throws LabError EUNSAFE for any other path, or if cgroup v2 is not mounted.
 */
export function inCgroupArgv(cgroup: string, argv: readonly string[]): string[] {
  const mount = findCgroup2Mount();
  const rel = mount === null ? '' : relative(mount, cgroup).split(sep);
  if (mount === null || rel.length !== 2 || !RUN_DIR.test(rel[0]!) || !NODE_NAME.test(rel[1]!) || join(mount, ...rel) !== cgroup) {
    throw new LabError('EUNSAFE', `${cgroup} is not a lab node's cgroup (${mount ?? 'no cgroup2 mount'}/${LAB_PREFIX}<run>/<node>)`);
  }
  return ['/bin/sh', '-c', JOIN_CGROUP_SCRIPT, cgroup, ...argv];
}

/** One run's cgroup subtree: `<mount>/rd-<run>` with one child per node. */
export class RunCgroups {
  readonly parent: string;
  /** Set once this object made the parent: it never removes a directory another run made. */
  private made = false;

  constructor(readonly mount: string, readonly runId: string) {
    this.parent = join(mount, runName(runId));
  }

  /** The cgroup directory of a node (whether or not it exists yet). */
  node(name: string): string {
    return join(this.parent, name);
  }

  exists(): boolean {
    return existsSync(this.parent);
  }

  /** Creates the parent, then one child per node. Throws the fs error (EEXIST if the parent exists). */
  create(nodes: readonly string[]): void {
    mkdirSync(this.parent);
    this.made = true;
    for (const n of nodes) mkdirSync(this.node(n));
  }

  /**
   * Kills every process in the subtree and removes it (see removeCgroupTree); false if this
   * object never made it or it could not be removed.
   */
  remove(): Promise<boolean> {
    return this.made ? removeCgroupTree(this.mount, this.parent) : Promise.resolve(false);
  }

  removeSync(): boolean {
    return this.made && removeCgroupTreeSync(this.mount, this.parent);
  }
}

/** The `rd-<run>` cgroup directories under `mount` (every run's, or only `runId`'s). */
export function listRunCgroups(mount: string, runId?: string): string[] {
  try {
    return readdirSync(mount, { withFileTypes: true })
      .filter((d) => d.isDirectory() && RUN_DIR.test(d.name) && (runId === undefined || d.name === runName(runId)))
      .map((d) => join(mount, d.name));
  } catch {
    return [];
  }
}

/** `dir` and every cgroup below it, deepest first. */
function cgroupTree(dir: string): string[] {
  let children: string[] = [];
  try {
    children = readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => join(dir, d.name));
  } catch {
    return [];
  }
  return [...children.flatMap(cgroupTree), dir];
}

function readPids(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter((s) => /^\d+$/.test(s)).map(Number);
  } catch {
    return [];
  }
}

/** This process's cgroup v2 directory under `mount`, or null if unknown. */
function ownCgroup(mount: string): string | null {
  try {
    const line = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'));
    return line === undefined ? null : join(mount, line.slice(3));
  } catch {
    return null;
  }
}

/** SIGKILLs every process in the subtree: cgroup.kill where the kernel has it (5.14+), else pid by pid. */
function killTree(dir: string): void {
  try {
    writeFileSync(join(dir, 'cgroup.kill'), '1');
    return;
  } catch {
    // no cgroup.kill: fall back to the pids, which races with forks, so callers repeat it
  }
  for (const cg of cgroupTree(dir)) {
    for (const pid of readPids(cg)) {
      if (pid === process.pid) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

/** True while any process lives in the subtree (cgroup.events counts descendants). */
function populated(dir: string): boolean {
  try {
    return /^populated 1$/m.test(readFileSync(join(dir, 'cgroup.events'), 'utf8'));
  } catch {
    return cgroupTree(dir).some((cg) => readPids(cg).length > 0);
  }
}

/** rmdir deepest first; a zombie no longer holds its cgroup, so this works before reaping. */
function rmdirTree(dir: string): boolean {
  for (const cg of cgroupTree(dir)) {
    try {
      rmdirSync(cg);
    } catch {
      // reported through the result: the caller sees the directory still there
    }
  }
  return !existsSync(dir);
}

/** Checks before killing: the subtree must be a lab run's, and must not hold this very process. */
function prepareRemoval(mount: string, dir: string): boolean {
  assertRunCgroup(mount, dir);
  if (!existsSync(dir)) return false;
  const own = ownCgroup(mount);
  if (own !== null && (own === dir || own.startsWith(dir + sep))) {
    throw new LabError('EUNSAFE', `this process runs inside ${dir}; removing it would kill this process`);
  }
  return true;
}

const SETTLE_MS = 5000;
const POLL_MS = 20;

/**
 * Kills every process in a run's cgroup subtree, waits until they are gone, and removes the
 * directories deepest first. Resolves true if `dir` is gone, false if it was absent or could not
 * be removed. Throws LabError EUNSAFE if `dir` is not a run's cgroup or holds this process.
 */
export async function removeCgroupTree(mount: string, dir: string): Promise<boolean> {
  if (!prepareRemoval(mount, dir)) return false;
  const deadline = Date.now() + SETTLE_MS;
  killTree(dir);
  while (populated(dir) && Date.now() < deadline) {
    await sleep(POLL_MS);
    killTree(dir);
  }
  return rmdirTree(dir);
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** removeCgroupTree for exit and signal handlers, where nothing async runs any more. */
export function removeCgroupTreeSync(mount: string, dir: string): boolean {
  if (!prepareRemoval(mount, dir)) return false;
  const deadline = Date.now() + SETTLE_MS;
  killTree(dir);
  while (populated(dir) && Date.now() < deadline) {
    Atomics.wait(sleeper, 0, 0, POLL_MS);
    killTree(dir);
  }
  return rmdirTree(dir);
}

/** BPF pin directories `<BPF_FS>/rd-<run>-*` (every run's, or only `runId`'s). */
export function listPinDirs(runId?: string): string[] {
  try {
    return readdirSync(BPF_FS, { withFileTypes: true })
      .filter((d) => d.isDirectory() && PIN_DIR.test(d.name) && (runId === undefined || d.name.startsWith(runPrefix(runId))))
      .map((d) => join(BPF_FS, d.name));
  } catch {
    return [];
  }
}

/**
 * Removes pin directories with everything pinned in them (maps, links). Call it once the agents
 * that use them are stopped. Returns the paths removed; `onError` hears of the others.
 */
export function removePinDirs(runId?: string, onError?: (path: string, e: unknown) => void): string[] {
  const removed: string[] = [];
  for (const p of listPinDirs(runId)) {
    try {
      rmSync(p, { recursive: true, force: true });
      removed.push(p);
    } catch (e) {
      onError?.(p, e);
    }
  }
  return removed;
}

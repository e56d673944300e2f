// Network-namespace primitives for the lab: naming, create, run inside, delete (async and, for exit
// handlers, synchronous). Everything goes through `ip` with argv arrays.

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { exec, execOk, type ExecOptions, type ExecResult } from '../util/exec.js';

/** Every lab namespace name starts with this; `rudder lab clean` removes all of them. */
export const LAB_PREFIX = 'rd-';

const RUN_ID = /^[0-9a-f]{4}$/;

/** A fresh 4-hex-digit run id. */
export function newRunId(): string {
  return randomBytes(2).toString('hex');
}

export function isRunId(s: string): boolean {
  return RUN_ID.test(s);
}

/** `rd-<id>`: the run's own name, e.g. its cgroup directory. */
export function runName(runId: string): string {
  return `${LAB_PREFIX}${runId}`;
}

/** The prefix shared by every namespace of one run: `rd-<id>-`. */
export function runPrefix(runId: string): string {
  return `${runName(runId)}-`;
}

/** Where `ip netns add` puts the namespace files that `nsenter --net=` can open. */
export const NETNS_RUN_DIR = '/run/netns';

/** `rd-<id>-<role>`. */
export function nsName(runId: string, role: string): string {
  return `${runPrefix(runId)}${role}`;
}

function parseNetnsList(stdout: string): string[] {
  return stdout.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n !== '');
}

/** All named network namespaces on the machine. Throws ExecError if `ip` fails. */
export async function listNamespaces(): Promise<string[]> {
  return parseNetnsList((await execOk(['ip', 'netns', 'list'])).stdout);
}

/** Names of the lab namespaces (all runs, or the run given). */
export async function listLabNamespaces(runId?: string): Promise<string[]> {
  const prefix = runId === undefined ? LAB_PREFIX : runPrefix(runId);
  return (await listNamespaces()).filter((n) => n.startsWith(prefix));
}

/** Creates a named namespace. Throws ExecError if it exists or cannot be created. */
export async function addNamespace(name: string): Promise<void> {
  await execOk(['ip', 'netns', 'add', name]);
}

/** Runs argv inside a namespace (`ip netns exec`); resolves with the exit code, like exec. */
export function execIn(ns: string, argv: readonly string[], opts?: ExecOptions): Promise<ExecResult> {
  return exec(['ip', 'netns', 'exec', ns, ...argv], opts);
}

/** `ip -n <ns> <args...>`; throws ExecError with ip's message on failure. */
export function ipIn(ns: string, args: readonly string[]): Promise<ExecResult> {
  return execOk(['ip', '-n', ns, ...args]);
}

/** Sets sysctls inside a namespace (keys like "net.ipv4.ip_forward"). Throws ExecError on failure. */
export async function sysctlIn(ns: string, settings: Record<string, string | number>): Promise<void> {
  const args = Object.entries(settings).map(([k, v]) => `${k}=${v}`);
  if (args.length > 0) await execOk(['ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', ...args]);
}

/** PIDs of the processes living in a namespace (empty if it does not exist). */
export async function namespacePids(ns: string): Promise<number[]> {
  const r = await exec(['ip', 'netns', 'pids', ns]);
  return r.code === 0 ? parsePids(r.stdout) : [];
}

function parsePids(stdout: string): number[] {
  return stdout.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number).filter((p) => p !== process.pid);
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/**
 * Kills every process in the namespace, then deletes it (its interfaces go with it).
 * Resolves false if the namespace could not be deleted (e.g. it was already gone).
 */
export async function deleteNamespace(ns: string): Promise<boolean> {
  for (const pid of await namespacePids(ns)) killQuietly(pid);
  const r = await exec(['ip', 'netns', 'del', ns]);
  return r.code === 0;
}

/** Synchronous deleteNamespace, for 'exit' and signal handlers where nothing async runs any more. */
export function deleteNamespaceSync(ns: string): boolean {
  const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: 5000 });
  if (pids.status === 0) for (const pid of parsePids(pids.stdout)) killQuietly(pid);
  const r = spawnSync('ip', ['netns', 'del', ns], { encoding: 'utf8', timeout: 5000 });
  return r.status === 0;
}

/**
 * Removes lab namespaces left behind by runs that crashed: every `rd-` namespace, or only the
 * given run's. Kills the processes inside first. Resolves with the names removed; a namespace that
 * cannot be removed is reported through `onError` and skipped.
 */
export async function removeLabNamespaces(runId?: string, onError?: (ns: string) => void): Promise<string[]> {
  const removed: string[] = [];
  for (const ns of await listLabNamespaces(runId)) {
    if (await deleteNamespace(ns)) removed.push(ns);
    else onError?.(ns);
  }
  return removed;
}

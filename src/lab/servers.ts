// Long-running processes inside lab namespaces (pod servers, agents under test), tracked so the lab
// can stop them on teardown, synchronously if it must.
//
// These are spawned directly rather than through util/exec (which waits for the program to end),
// still with argv arrays and no shell built from data. Every step of the placement chain (cgroup
// join, `ip netns exec` or `nsenter`) execs the next, so the child's pid is the program itself and
// signals reach it.

import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../observe/log.js';
import { LabError } from './errors.js';
import { placedArgv, type Placement } from './place.js';
import type { PodSpec } from './topology.js';

const OUTPUT_LINES = 200;

/** A process running in a lab namespace. */
export interface LabProcess {
  readonly label: string;
  readonly ns: string;
  /** The lab node cgroup the process started in, if any. */
  readonly cgroup: string | undefined;
  readonly argv: readonly string[];
  readonly child: ChildProcess;
  /** Resolves with the exit code (null if killed by a signal) when the process ends. */
  readonly exited: Promise<number | null>;
  /** The last lines the process wrote to stdout and stderr. */
  output(): string[];
  /** True until the process has exited. */
  running(): boolean;
}

export interface SpawnOptions {
  /** A name for logs and errors; defaults to argv[0]. */
  label?: string;
  /** Called with each line the process writes to stdout. */
  onStdoutLine?: (line: string) => void;
  env?: NodeJS.ProcessEnv;
  /**
   * Enter the namespace with `nsenter --net` instead of `ip netns exec`, keeping the root mount
   * namespace so /sys/fs/bpf and cgroupfs stay visible (an eBPF agent needs them).
   */
  keepMounts?: boolean;
}

/** The processes one lab started. */
export class ProcessGroup {
  private readonly procs = new Set<LabProcess>();

  constructor(private readonly logger: Logger) {}

  /**
   * Starts argv at `place` (namespace, cgroup; opts.keepMounts overrides place.keepMounts when set).
   * Never throws for the program; a failed start shows as an early exit. Throws LabError EUNSAFE if
   * the cgroup is not a lab node's.
   */
  spawn(place: Placement, argv: readonly string[], opts: SpawnOptions = {}): LabProcess {
    const label = opts.label ?? argv[0] ?? '?';
    const [cmd, ...args] = placedArgv({ ...place, keepMounts: opts.keepMounts ?? place.keepMounts }, argv);
    const child = spawn(cmd!, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    const ns = place.ns;
    const lines: string[] = [];
    let alive = true;
    const keep = (line: string): void => {
      lines.push(line);
      if (lines.length > OUTPUT_LINES) lines.shift();
    };
    const log = this.logger.child({ proc: label, ns });
    splitLines(child.stdout!, (l) => { keep(l); log.debug('stdout', { line: l }); opts.onStdoutLine?.(l); });
    splitLines(child.stderr!, (l) => { keep(l); log.debug('stderr', { line: l }); });
    child.stdin!.on('error', () => {});
    const exited = new Promise<number | null>((resolve) => {
      child.on('error', (e) => { keep(`spawn error: ${e.message}`); alive = false; resolve(null); });
      child.on('exit', (code) => { alive = false; resolve(code); });
    });
    const p: LabProcess = { label, ns, cgroup: place.cgroup, argv, child, exited, output: () => [...lines], running: () => alive };
    this.procs.add(p);
    void exited.then((code) => {
      this.procs.delete(p);
      log.debug('process exited', { code });
    });
    return p;
  }

  /** Stops one process: SIGTERM, then SIGKILL after graceMs. Resolves when it has exited. */
  async stop(p: LabProcess, graceMs = 2000): Promise<void> {
    if (!p.running()) return;
    p.child.kill('SIGTERM');
    const timer = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
    await p.exited;
    clearTimeout(timer);
  }

  /** Stops every process of the group. */
  async stopAll(graceMs = 2000): Promise<void> {
    await Promise.all([...this.procs].map((p) => this.stop(p, graceMs)));
  }

  /** SIGKILLs every process without waiting, for exit handlers. */
  killAllSync(): void {
    for (const p of this.procs) {
      if (p.running()) p.child.kill('SIGKILL');
    }
    this.procs.clear();
  }

  list(): LabProcess[] {
    return [...this.procs];
  }
}

function splitLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  stream.on('end', () => { if (buf !== '') onLine(buf); });
}

/** Path of the compiled pod server script (next to this module in dist/). */
export const PODSERVER_SCRIPT = fileURLToPath(new URL('./podserver.js', import.meta.url));

/** Path of the compiled UDP client script. */
export const UDPCLIENT_SCRIPT = fileURLToPath(new URL('./udpclient.js', import.meta.url));

/** The argv that runs a pod's server (HTTP on its ports, UDP echo on its udpPorts). */
export function podServerArgv(pod: PodSpec): string[] {
  return [
    process.execPath, PODSERVER_SCRIPT, '--name', pod.name,
    ...pod.ports.flatMap((p) => ['--port', String(p)]),
    ...pod.udpPorts.flatMap((p) => ['--udp-port', String(p)]),
  ];
}

/**
 * Starts a pod's server at `place` (its namespace and node cgroup) and waits until it reports every
 * socket listening.
 * Throws LabError ESERVER (with the server's output) if it exits first or is not ready in time;
 * the process is killed in that case.
 */
export async function startPodServer(group: ProcessGroup, place: Placement, pod: PodSpec, timeoutMs = 10_000): Promise<LabProcess> {
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => { markReady = resolve; });
  const p = group.spawn(place, podServerArgv(pod), {
    label: `server/${pod.name}`,
    onStdoutLine: (line) => { if (line.startsWith('{"ready":true')) markReady(); },
  });
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    ready.then(() => 'ready' as const),
    p.exited.then(() => 'exited' as const),
    new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), timeoutMs); }),
  ]);
  clearTimeout(timer);
  if (outcome === 'ready') return p;
  await group.stop(p, 0);
  const why = outcome === 'exited' ? 'exited before it was ready' : `was not ready within ${timeoutMs} ms`;
  throw new LabError('ESERVER', `server of pod ${pod.name} ${why}: ${p.output().join(' | ') || 'no output'}`);
}

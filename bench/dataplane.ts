// Data plane sync cost on a real kernel: a full sync of N services x 4 endpoints (the first, then
// the periodic one over the programmed state), then one EndpointSlice change at a time, through
// tracker, Syncer and data plane, for each data plane and size; bench/dataplane-run.ts says what
// each figure covers. Every measurement runs in its own process (memory starts from nothing, and
// a crash there cannot leave this one holding kernel state), in scratch state named by a lab run
// id (netns `rd-<run>-bench`; for ebpf a `rd-<run>/bench` cgroup and pins under
// /sys/fs/bpf/rd-<run>-bench), which this process removes again by run id whatever happened.
// Usage (root): node dist/bench/dataplane.js [--planes iptables-legacy,iptables-nft,nftables,ebpf]
//   [--sizes 1000,10000] [--changes N (default 10 for the netfilter planes, 1000 for ebpf)]
//   [--cpu-prof-dir DIR (writes a V8 CPU profile of each measurement there)] [--json]

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freeRunId, removeLeftovers } from '../src/lab/leftovers.js';
import { findCgroup2Mount } from '../src/lab/cgroup.js';
import { createLogger } from '../src/observe/log.js';
import { PLANES, measurePlane, type Plane, type PlaneResult, type Split } from './dataplane-run.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? undefined : process.argv[i + 1];
}

const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const p99 = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.99))] ?? NaN;
};

/** Milliseconds in a unit that keeps three significant digits: "3.86 s", "126 ms", "0.213 ms". */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return '-';
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 100) return `${ms.toFixed(0)} ms`;
  if (ms >= 10) return `${ms.toFixed(1)} ms`;
  if (ms >= 1) return `${ms.toFixed(2)} ms`;
  return `${ms.toFixed(3)} ms`;
}

const own = (s: Split): number => s.ms - s.kernelMs;

/** The report: one table of sync costs, one of where the time of full syncs goes and memory. */
export function renderResults(results: readonly PlaneResult[], command: string): string {
  const out = [
    `rudder data plane benchmark: \`${command}\`, 4 endpoints per service, node ${process.version}`,
    'one slice change = event handler + the sync the runner fires, until the kernel holds it; kernel = the kernel tool\'s process (netfilter planes) or the bpf(2) map calls through koffi (ebpf; a batch call counts once per chunk); Rudder = the rest (tracker, model, render or map state)',
    '',
    '| data plane | services | first full sync | periodic full sync | one slice change, end to end (median / p99) | of which Rudder (median / p99) | of which kernel (median / p99) | transaction (one change) | changes |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    const total = r.changes.map((c) => c.ms);
    const rudder = r.changes.map(own);
    const kernel = r.changes.map((c) => c.kernelMs);
    const tx = r.plane === 'ebpf' ? `${median(r.transaction)} map elements` : `${(median(r.transaction) / 1024).toFixed(1)} KiB`;
    out.push(`| ${r.plane} | ${r.services.toLocaleString('en-US')} | ${fmtMs(r.firstFull.ms)} | ${fmtMs(r.periodicFull.ms)} | ${fmtMs(median(total))} / ${fmtMs(p99(total))} | ${fmtMs(median(rudder))} / ${fmtMs(p99(rudder))} | ${fmtMs(median(kernel))} / ${fmtMs(p99(kernel))} | ${tx} | ${r.changes.length} |`);
  }
  out.push(
    '',
    '| data plane | services | init | first full sync: Rudder / kernel (calls) | periodic full sync: Rudder / kernel (calls), written | one change: CPU (median / p99) | GC in the change loop: count, total, longest | RSS after load | heap used after load | drift after the changes |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  );
  const calls = (s: Split, plane: Plane): string => `${s.calls.toLocaleString('en-US')} ${plane === 'ebpf' ? 'map calls' : 'runs'}`;
  for (const r of results) {
    const cpu = r.changes.map((c) => c.cpuMs);
    const gc = r.gcDuringChanges;
    out.push(`| ${r.plane} | ${r.services.toLocaleString('en-US')} | ${fmtMs(r.initMs)} | ${fmtMs(own(r.firstFull))} / ${fmtMs(r.firstFull.kernelMs)} (${calls(r.firstFull, r.plane)}) | ${fmtMs(own(r.periodicFull))} / ${fmtMs(r.periodicFull.kernelMs)} (${calls(r.periodicFull, r.plane)}), ${r.periodicWritten} | ${fmtMs(median(cpu))} / ${fmtMs(p99(cpu))} | ${gc.count}, ${fmtMs(gc.totalMs)}, ${fmtMs(gc.maxMs)} | ${r.memory.rssMiB.toFixed(0)} MiB | ${r.memory.heapUsedMiB.toFixed(0)} MiB | ${r.drift ?? '-'} |`);
  }
  const quiet = results.filter((r) => r.changesAfterQuiet !== null && r.changesAfterQuiet.length > 0);
  if (quiet.length > 0) {
    out.push('', '| data plane | services | one slice change after 31 s without a sync (median of 3): end to end | of which Rudder | of which kernel (calls) |', '|---|---:|---:|---:|---:|');
    for (const r of quiet) {
      const q = r.changesAfterQuiet!;
      const mid = [...q].sort((a, b) => a.ms - b.ms)[q.length >> 1]!;
      out.push(`| ${r.plane} | ${r.services.toLocaleString('en-US')} | ${fmtMs(mid.ms)} | ${fmtMs(own(mid))} | ${fmtMs(mid.kernelMs)} (${calls(mid, r.plane)}) |`);
    }
  }
  out.push('', 'CPU: user + system time of the measuring process (the netfilter planes\' kernel tools run in child processes, not counted); memory: process.memoryUsage() of the measuring process (tracker, table and data plane of one size, no admin server or API client) after the load and a GC');
  return out.join('\n') + '\n';
}

/** Runs one measurement in a child process. Rejects with the child's stderr if it fails. */
function runChild(plane: Plane, n: number, changes: number, runId: string, profDir: string | undefined): Promise<PlaneResult> {
  const prof = profDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-name', `${plane}-${n}.cpuprofile`];
  const argv = ['--expose-gc', ...prof, fileURLToPath(import.meta.url), '--measure', plane, String(n), String(changes), runId];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); process.stderr.write(b); });
    // A signal to this process reaches the child too; it removes its own state, then this does.
    child.on('close', (code, signal) => {
      if (code === 0) {
        try {
          resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '') as PlaneResult);
        } catch (e) {
          reject(new Error(`${plane} ${n}: unreadable result (${(e as Error).message}): ${stdout.slice(-300)}`));
        }
      } else {
        reject(new Error(`${plane} ${n}: measurement exited ${code ?? signal}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`));
      }
    });
  });
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--measure');
  if (i !== -1) {
    const [plane, n, changes, runId] = process.argv.slice(i + 1, i + 5);
    for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, () => process.exit(130));
    const r = await measurePlane(plane as Plane, Number(n), Number(changes), runId!);
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  if (process.getuid?.() !== 0) throw new Error('the data plane benchmark programs a real kernel: run it as root');
  const planes = (arg('planes') ?? PLANES.join(',')).split(',') as Plane[];
  for (const p of planes) if (!(PLANES as readonly string[]).includes(p)) throw new Error(`unknown plane ${p}: one of ${PLANES.join(', ')}`);
  const sizes = (arg('sizes') ?? '1000,10000').split(',').map(Number);
  for (const n of sizes) if (!Number.isInteger(n) || n < 1 || n > 100_000) throw new Error(`--sizes: ${n} is not an integer from 1 to 100000`);
  const changesFlag = arg('changes');
  const profDir = arg('cpu-prof-dir');
  const logger = createLogger({ level: 'warn' });
  // On a signal the child removes its own state; this waits for it, then sweeps by run id.
  for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, () => { /* the child's exit ends the run */ });

  const results: PlaneResult[] = [];
  let failed: Error | null = null;
  for (const plane of planes) {
    for (const n of sizes) {
      const changes = changesFlag !== undefined ? Number(changesFlag) : plane === 'ebpf' ? 1000 : 10;
      const runId = await freeRunId(findCgroup2Mount());
      process.stderr.write(`${plane}, ${n.toLocaleString('en-US')} services, ${changes} changes (run ${runId})\n`);
      try {
        results.push(await runChild(plane, n, changes, runId, profDir));
      } catch (e) {
        failed = e as Error;
      } finally {
        const left = await removeLeftovers(runId, logger);
        if (left.length > 0) process.stderr.write(`removed what run ${runId} left: ${left.join(', ')}\n`);
      }
      if (failed !== null) break;
    }
    if (failed !== null) break;
  }
  const command = ['node', 'dist/bench/dataplane.js', ...process.argv.slice(2)].join(' ');
  if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(results, null, 1)}\n`);
  else process.stdout.write(renderResults(results, command));
  if (failed !== null) throw failed;
}

await main();

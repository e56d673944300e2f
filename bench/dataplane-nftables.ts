// nftables data plane sync cost on a real kernel: a full sync of N services x 4 endpoints (the
// first of a process, which recreates the table, then a periodic one, which flushes and refills
// it in place), then the cost of one EndpointSlice change at a time (tracker + model + render +
// nft), in a scratch network namespace that is always removed.
// Usage (root): node dist/bench/dataplane-nftables.js [--sizes 1000,10000] [--changes 10]

import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { NftablesDataPlane } from '../src/dataplane/nftables/index.js';
import { createLogger } from '../src/observe/log.js';
import { Syncer } from '../src/sync/syncer.js';
import { Tracker } from '../src/sync/tracker.js';
import { exec, execOk, type ExecOptions } from '../src/util/exec.js';
import { benchConfig, benchService, benchSlice } from './fixtures.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? dflt : process.argv[i + 1] ?? dflt;
}

const sizes = arg('sizes', '1000,10000').split(',').map(Number);
const changes = Number(arg('changes', '10'));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const p99 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))]!;

const ns = `rd-${randomBytes(2).toString('hex')}-nbench`;
const removeNs = (): void => { try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }); } catch { /* already gone */ } };
process.on('exit', removeNs);
for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, () => process.exit(130));

const rows: string[] = [];
for (const n of sizes) {
  await execOk(['ip', 'netns', 'add', ns]);
  try {
    let toolMs = 0;
    const nsExec = async (argv: readonly string[], o?: ExecOptions) => {
      const t0 = process.hrtime.bigint();
      try {
        return await exec(['ip', 'netns', 'exec', ns, ...argv], o);
      } finally {
        toolMs += Number(process.hrtime.bigint() - t0) / 1e6;
      }
    };
    const logger = createLogger({ level: 'warn' });
    const dp = new NftablesDataPlane({ config: benchConfig, logger, exec: nsExec });
    await dp.init();
    const tracker = new Tracker('node-1');
    tracker.handle({ type: 'synced', kind: 'Service', keys: [] });
    tracker.handle({ type: 'synced', kind: 'EndpointSlice', keys: [] });
    for (let i = 0; i < n; i++) {
      tracker.handle({ type: 'upsert', object: benchService(i) });
      tracker.handle({ type: 'upsert', object: benchSlice(i, 0) });
    }
    const syncer = new Syncer({ tracker, dataplane: dp, config: () => benchConfig, logger, fullSyncIntervalMs: 3_600_000 });
    toolMs = 0;
    const full = await syncer.sync();
    if (full?.full !== true) throw new Error(`expected a full first sync, got ${JSON.stringify(full)}`);
    const fullTool = toolMs;
    const fullBytes = dp.lastTransaction.length;
    // The periodic full sync: flush and refill in place (lists the chains first).
    toolMs = 0;
    const t0 = process.hrtime.bigint();
    await dp.apply([], syncer.table, { full: true });
    const refillMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const refillTool = toolMs;

    const costs: number[] = [];
    const tools: number[] = [];
    const bytes: number[] = [];
    const gens = new Map<number, number>();
    for (let c = 0; c < changes; c++) {
      const i = (c * 7919) % n;
      const gen = (gens.get(i) ?? 0) + 1;
      gens.set(i, gen);
      toolMs = 0;
      const s0 = process.hrtime.bigint();
      tracker.handle({ type: 'upsert', object: benchSlice(i, gen) });
      const r = await syncer.sync();
      costs.push(Number(process.hrtime.bigint() - s0) / 1e6);
      tools.push(toolMs);
      if (r?.full !== false || r.changes !== 1) throw new Error(`expected a partial sync of one change, got ${JSON.stringify(r)}`);
      bytes.push(dp.lastTransaction.length);
    }
    const own = costs.map((c, k) => c - tools[k]!);
    const heap = process.memoryUsage().heapUsed / 2 ** 20;
    rows.push(`| nftables | ${n.toLocaleString('en-US')} | ${(full.durationMs / 1000).toFixed(2)} s (Rudder ${((full.durationMs - fullTool) / 1000).toFixed(2)} s, ${(fullBytes / 2 ** 20).toFixed(1)} MiB) `
      + `| ${(refillMs / 1000).toFixed(2)} s (Rudder ${((refillMs - refillTool) / 1000).toFixed(2)} s) `
      + `| ${median(costs).toFixed(1)} ms (p99 ${p99(costs).toFixed(1)}) | ${median(own).toFixed(2)} ms | ${(median(bytes) / 1024).toFixed(1)} KiB | ${heap.toFixed(0)} MiB |`);
  } finally {
    removeNs();
  }
}
console.log(`rudder nftables data plane benchmark: ${changes} one-slice changes per size, 4 endpoints per service (NodePort services)`);
console.log('| data plane | services | first full sync (recreate) | periodic full sync (flush + refill) | one slice change, end to end (median) | of which Rudder (model + render) | transaction (one change) | heap |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);

// Data plane sync cost on a real kernel: a full sync of N services x 4 endpoints (the first, then
// a periodic one over the programmed state), then the cost of one EndpointSlice change at a time
// (tracker + model + render + kernel tool), in a scratch network namespace that is always removed.
// Usage (root): node dist/bench/dataplane.js [--planes iptables-legacy,iptables-nft,nftables]
//   [--sizes 1000,10000] [--changes 10]

import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import type { DataPlane } from '../src/dataplane/dataplane.js';
import { IptablesDataPlane } from '../src/dataplane/iptables/index.js';
import { NftablesDataPlane } from '../src/dataplane/nftables/index.js';
import { createLogger } from '../src/observe/log.js';
import { Syncer } from '../src/sync/syncer.js';
import { Tracker } from '../src/sync/tracker.js';
import { exec, execOk, type ExecFn, type ExecOptions } from '../src/util/exec.js';
import { benchConfig, benchService, benchSlice } from './fixtures.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? dflt : process.argv[i + 1] ?? dflt;
}

type Plane = 'iptables-legacy' | 'iptables-nft' | 'nftables';
const PLANES: Record<Plane, (exec: ExecFn) => DataPlane & { lastTransaction: string }> = {
  'iptables-legacy': (e) => new IptablesDataPlane({ config: benchConfig, logger: createLogger({ level: 'warn' }), exec: e, backend: 'legacy' }),
  'iptables-nft': (e) => new IptablesDataPlane({ config: benchConfig, logger: createLogger({ level: 'warn' }), exec: e, backend: 'nft' }),
  nftables: (e) => new NftablesDataPlane({ config: benchConfig, logger: createLogger({ level: 'warn' }), exec: e }),
};

const planes = arg('planes', 'iptables-legacy,iptables-nft,nftables').split(',') as Plane[];
for (const p of planes) if (PLANES[p] === undefined) throw new Error(`unknown plane ${p}: one of ${Object.keys(PLANES).join(', ')}`);
const sizes = arg('sizes', '1000,10000').split(',').map(Number);
const changes = Number(arg('changes', '10'));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const secs = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

const ns = `rd-${randomBytes(2).toString('hex')}-bench`;
const removeNs = (): void => { try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }); } catch { /* already gone */ } };
process.on('exit', removeNs);
for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, () => process.exit(130));

const rows: string[] = [];
for (const plane of planes) {
  for (const n of sizes) {
    await execOk(['ip', 'netns', 'add', ns]);
    try {
      let toolMs = 0;
      const nsExec: ExecFn = async (argv: readonly string[], o?: ExecOptions) => {
        const t0 = process.hrtime.bigint();
        try {
          return await exec(['ip', 'netns', 'exec', ns, ...argv], o);
        } finally {
          toolMs += Number(process.hrtime.bigint() - t0) / 1e6;
        }
      };
      const dp = PLANES[plane](nsExec);
      await dp.init();
      const tracker = new Tracker('node-1');
      tracker.handle({ type: 'synced', kind: 'Service', keys: [] });
      tracker.handle({ type: 'synced', kind: 'EndpointSlice', keys: [] });
      for (let i = 0; i < n; i++) {
        tracker.handle({ type: 'upsert', object: benchService(i) });
        tracker.handle({ type: 'upsert', object: benchSlice(i, 0) });
      }
      const syncer = new Syncer({ tracker, dataplane: dp, config: () => benchConfig, logger: createLogger({ level: 'warn' }), fullSyncIntervalMs: 3_600_000 });
      const first = await syncer.sync();
      if (first?.full !== true) throw new Error(`expected a full first sync, got ${JSON.stringify(first)}`);
      const t0 = process.hrtime.bigint();
      await dp.apply([], syncer.table, { full: true });
      const periodicMs = Number(process.hrtime.bigint() - t0) / 1e6;

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
      rows.push(`| ${plane} | ${n.toLocaleString('en-US')} | ${secs(first.durationMs)} | ${secs(periodicMs)} | ${median(costs).toFixed(0)} ms | ${median(own).toFixed(1)} ms | ${(median(bytes) / 1024).toFixed(1)} KiB |`);
    } finally {
      removeNs();
    }
  }
}
console.log(`rudder data plane benchmark: ${changes} one-slice changes per size, 4 endpoints per service`);
console.log('| data plane | services | first full sync | periodic full sync | one slice change, end to end (median) | of which Rudder (model + render) | transaction (one change) |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);

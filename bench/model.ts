// Control-plane cost: full build of N services x 4 endpoints, and the cost of one EndpointSlice
// change (tracker + rebuild + diff of the touched service) at several scales.
// Usage: node dist/bench/model.js [--sizes 1000,10000] [--changes 2000]

import { build, rebuildServices } from '../src/model/build.js';
import { applyRebuilt, diffServices } from '../src/model/diff.js';
import { Tracker } from '../src/sync/tracker.js';
import { benchConfig, benchService, benchSlice } from './fixtures.js';

const cfg = benchConfig;
const service = benchService;
const slice = benchSlice;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function p99(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.99))]!;
}

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? dflt : process.argv[i + 1] ?? dflt;
}

const sizes = arg('sizes', '1000,10000').split(',').map(Number);
const changes = Number(arg('changes', '2000'));
const rows: string[] = [];

for (const n of sizes) {
  const tracker = new Tracker('node-1');
  for (let i = 0; i < n; i++) {
    tracker.handle({ type: 'upsert', object: service(i) });
    tracker.handle({ type: 'upsert', object: slice(i, 0) });
  }
  tracker.take();
  const builds: number[] = [];
  let table = build(tracker, cfg);
  for (let r = 0; r < 7; r++) {
    const t0 = process.hrtime.bigint();
    table = build(tracker, cfg);
    builds.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const heapMB = process.memoryUsage().heapUsed / 1048576;

  const costs: number[] = [];
  let changed = 0;
  const gens = new Map<number, number>();
  for (let c = 0; c < changes; c++) {
    const i = (c * 7919) % n;
    const gen = (gens.get(i) ?? 0) + 1;
    gens.set(i, gen);
    const next = slice(i, gen);
    const t0 = process.hrtime.bigint();
    tracker.handle({ type: 'upsert', object: next });
    const pending = tracker.take();
    const rebuilt = rebuildServices(tracker, cfg, pending.services);
    const diff = diffServices(table, rebuilt);
    applyRebuilt(table, rebuilt);
    costs.push(Number(process.hrtime.bigint() - t0) / 1e6);
    changed += diff.length;
  }
  if (changed !== changes) throw new Error(`expected one change per update, got ${changed}/${changes}`);
  rows.push(`| ${n.toLocaleString('en-US')} | ${median(builds).toFixed(1)} ms | ${(median(costs) * 1000).toFixed(1)} µs | ${(p99(costs) * 1000).toFixed(1)} µs | ${heapMB.toFixed(0)} MiB |`);
}

console.log(`rudder model benchmark: ${changes} EndpointSlice changes per size, 4 endpoints per service, node ${process.version}`);
console.log('| services | full build (median of 7) | one slice change (median) | one slice change (p99) | heap after build |');
console.log('|---|---|---|---|---|');
for (const r of rows) console.log(r);

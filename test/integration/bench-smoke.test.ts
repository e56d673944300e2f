// `rudder bench --quick --json` through the real CLI: one row per configuration of every data plane,
// each with traffic, a sane p99 and a CPU time per request, and the lab gone afterwards:
// namespaces, cgroups and BPF pins. Root only (it builds network namespaces); about a minute. It
// checks that the benchmark runs, never how fast.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { RUDDER_BIN } from '../../src/lab/agents.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BPF_FS, Lab, findCgroup2Mount, listLabNamespaces, runName } from '../../src/lab/index.js';

const root = process.getuid?.() === 0;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runCli(args: string[], timeoutMs: number): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [RUDDER_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
    // SIGTERM lets the bench destroy its lab before it exits.
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

interface JsonRow {
  id: string;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  ratioToDirect: number | null;
  cpuUsPerRequest: number;
  cpuRatioToDirect: number | null;
  samples: unknown[];
}

/** What a run left: its namespaces, its cgroup directory, its BPF pin directories. */
async function leftovers(run: string): Promise<string[]> {
  const mount = findCgroup2Mount();
  const cgroup = mount === null ? [] : [join(mount, runName(run))].filter((d) => existsSync(d));
  const pins = ['node-1', 'node-2'].map((n) => join(BPF_FS, `${runName(run)}-${n}`)).filter((d) => existsSync(d));
  return [...(await listLabNamespaces(run)), ...cgroup, ...pins];
}

test('rudder bench --quick --json: a row per configuration of every data plane, no lab left behind', { skip: root ? false : 'needs root', timeout: 150_000 }, async () => {
  const r = await runCli(['bench', '--quick', '--json'], 120_000);
  const run = /lab run ([0-9a-f]{4}) is up/.exec(r.stderr)?.[1];
  try {
    assert.equal(r.code, 0, `rudder bench exited ${r.code}:\n${r.stderr}`);
    const result = JSON.parse(r.stdout) as { labRun: string; rows: JsonRow[]; command: string; machine: { nproc: number; kernel: string } };
    assert.equal(result.labRun, run);
    assert.equal(result.command, 'rudder bench --quick --json');
    assert.ok(result.machine.nproc > 0 && result.machine.kernel !== '');
    const planes = ['ebpf', 'iptables', 'nftables'];
    assert.deepEqual(result.rows.map((x) => x.id).sort(), [
      ...planes.flatMap((dp) => [`clusterip/${dp}/1`, `clusterip/${dp}/100`]), 'direct/external', 'direct/pod',
      ...planes.flatMap((dp) => [`nodeport/${dp}/1`, `nodeport/${dp}/100`]),
    ]);
    for (const row of result.rows) {
      assert.equal(row.samples.length, 1, `${row.id}: one round`);
      assert.ok(row.reqPerSec > 0, `${row.id}: req/s ${row.reqPerSec}`);
      assert.ok(row.p99Ms > 0 && row.p99Ms < 2000, `${row.id}: p99 ${row.p99Ms} ms`);
      assert.ok(row.p50Ms <= row.p99Ms, `${row.id}: p50 ${row.p50Ms} ms above p99 ${row.p99Ms} ms`);
      assert.ok(row.ratioToDirect !== null && row.ratioToDirect > 0, `${row.id}: ratio ${row.ratioToDirect}`);
      // Whole-machine CPU over the requests served: above zero, and below 1 s per request.
      assert.ok(row.cpuUsPerRequest > 0 && row.cpuUsPerRequest < 1e6, `${row.id}: CPU ${row.cpuUsPerRequest} µs/req`);
      assert.ok(row.cpuRatioToDirect !== null && row.cpuRatioToDirect > 0, `${row.id}: CPU ratio ${row.cpuRatioToDirect}`);
    }
  } finally {
    if (run !== undefined) {
      const left = await leftovers(run);
      if (left.length > 0) await Lab.cleanLeftovers({ runId: run });
      assert.deepEqual(left, [], 'the bench left lab namespaces, cgroups or pins behind');
    }
  }
  assert.ok(run !== undefined, `no lab run id in the progress output:\n${r.stderr}`);
});

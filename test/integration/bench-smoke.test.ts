// `rudder bench --quick --json` through the real CLI: one row per configuration, each with traffic
// and a sane p99, and the lab gone afterwards. Root only (it builds network namespaces); ~30 s.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { RUDDER_BIN } from '../../src/lab/agents.js';
import { Lab, listLabNamespaces } from '../../src/lab/index.js';

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
  samples: unknown[];
}

test('rudder bench --quick --json: a row per configuration with traffic, no lab left behind', { skip: root ? false : 'needs root', timeout: 150_000 }, async () => {
  const r = await runCli(['bench', '--quick', '--json'], 120_000);
  const run = /lab run ([0-9a-f]{4}) is up/.exec(r.stderr)?.[1];
  try {
    assert.equal(r.code, 0, `rudder bench exited ${r.code}:\n${r.stderr}`);
    const result = JSON.parse(r.stdout) as { labRun: string; rows: JsonRow[]; command: string; machine: { nproc: number; kernel: string } };
    assert.equal(result.labRun, run);
    assert.equal(result.command, 'rudder bench --quick --json');
    assert.ok(result.machine.nproc > 0 && result.machine.kernel !== '');
    assert.deepEqual(result.rows.map((x) => x.id).sort(), [
      'clusterip/iptables/1', 'clusterip/iptables/100', 'direct/external', 'direct/pod', 'nodeport/iptables/1', 'nodeport/iptables/100',
    ]);
    for (const row of result.rows) {
      assert.equal(row.samples.length, 1, `${row.id}: one round`);
      assert.ok(row.reqPerSec > 0, `${row.id}: req/s ${row.reqPerSec}`);
      assert.ok(row.p99Ms > 0 && row.p99Ms < 2000, `${row.id}: p99 ${row.p99Ms} ms`);
      assert.ok(row.p50Ms <= row.p99Ms, `${row.id}: p50 ${row.p50Ms} ms above p99 ${row.p99Ms} ms`);
      assert.ok(row.ratioToDirect !== null && row.ratioToDirect > 0, `${row.id}: ratio ${row.ratioToDirect}`);
    }
  } finally {
    if (run !== undefined) {
      const left = await listLabNamespaces(run);
      if (left.length > 0) await Lab.cleanLeftovers({ runId: run });
      assert.deepEqual(left, [], 'the bench left lab namespaces behind');
    }
  }
  assert.ok(run !== undefined, `no lab run id in the progress output:\n${r.stderr}`);
});

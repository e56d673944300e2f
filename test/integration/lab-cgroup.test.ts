// The lab's per-node cgroups on the real kernel: every process of a node and of its pods runs in
// `<cgroup2 mount>/rd-<run>/<node>` from its first instruction, clients and the fabric do not,
// and teardown (destroy, destroySync, cleanLeftovers) removes the cgroups and the BPF pin
// directories. The argv and mountinfo helpers are checked without root.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { memoryLogger } from '../../src/observe/log.js';
import { execOk } from '../../src/util/exec.js';
import { Lab } from '../../src/lab/lab.js';
import { LabError } from '../../src/lab/errors.js';
import { assertRunCgroup, BPF_FS, findCgroup2Mount, inCgroupArgv, listRunCgroups, parseCgroup2Mount } from '../../src/lab/cgroup.js';
import { newRunId, runName } from '../../src/lab/netns.js';
import { placedArgv } from '../../src/lab/place.js';
import { defaultTopology, type Topology } from '../../src/lab/topology.js';

const isLabError = (code: string) => (e: unknown): boolean => e instanceof LabError && e.code === code;

const HYBRID = [
  '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  '32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw',
].join('\n');

const mountHere = findCgroup2Mount();

describe('lab cgroups: helpers', () => {
  it('finds the cgroup2 mount in mountinfo, whatever the layout', () => {
    assert.equal(parseCgroup2Mount(HYBRID), '/sys/fs/cgroup/unified');
    assert.equal(parseCgroup2Mount('29 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate'), '/sys/fs/cgroup');
    assert.equal(parseCgroup2Mount('50 1 0:40 / /mnt/my\\040cg rw - cgroup2 none rw'), '/mnt/my cg');
    // A bind mount of a subtree is only a fallback: paths in /proc/<pid>/cgroup are relative to the root.
    assert.equal(parseCgroup2Mount('60 1 0:40 /sub /mnt/sub rw - cgroup2 none rw\n61 1 0:40 / /mnt/all rw - cgroup2 none rw'), '/mnt/all');
    assert.equal(parseCgroup2Mount(HYBRID.split('\n').slice(0, 2).join('\n')), null);
    assert.equal(parseCgroup2Mount(''), null);
  });

  it('joins a cgroup with a constant script and the data as positional arguments', { skip: mountHere === null ? 'cgroup v2 is not mounted' : false }, () => {
    const cg = `${mountHere}/rd-00aa/node-1`;
    const argv = inCgroupArgv(cg, ['curl', '$(reboot)', '"; rm -rf /']);
    assert.equal(argv[0], '/bin/sh');
    assert.equal(argv[1], '-c');
    assert.ok(!argv[2]!.includes(cg) && !argv[2]!.includes('curl'), 'no data in the script text');
    assert.deepEqual(argv.slice(3), [cg, 'curl', '$(reboot)', '"; rm -rf /']);
    assert.deepEqual(placedArgv({ ns: 'rd-00aa-node-1' }, ['id']), ['ip', 'netns', 'exec', 'rd-00aa-node-1', 'id']);
    assert.deepEqual(placedArgv({ ns: 'rd-00aa-node-1', keepMounts: true }, ['id']), ['nsenter', '--net=/run/netns/rd-00aa-node-1', '--', 'id']);
    assert.deepEqual(placedArgv({ ns: 'rd-00aa-node-1', cgroup: cg }, ['id']).slice(3), [cg, 'ip', 'netns', 'exec', 'rd-00aa-node-1', 'id']);
  });

  it('refuses every cgroup outside a lab run', () => {
    const here = mountHere ?? '/sys/fs/cgroup';
    for (const bad of [here, `${here}/`, `${here}/system.slice`, `${here}/rd-00aa/../x`, `${here}/rd-00aa/node-1/../../init.scope`, '/rd-00aa/node-1',
      `${here}/rd-00aa`, `${here}/rd-00aa/node-1/sub`, `${here}/rd-00aa/node-1/`, 'rd-00aa/node-1', `/tmp/rd-00aa/node-1`]) {
      assert.throws(() => inCgroupArgv(bad, ['id']), isLabError('EUNSAFE'), bad);
    }
    const m = '/sys/fs/cgroup/unified';
    for (const bad of [m, `${m}/`, `${m}/init.scope`, `${m}/rd-zz00`, `${m}/rd-00aa/../..`, '/elsewhere/rd-00aa']) {
      assert.throws(() => assertRunCgroup(m, bad), isLabError('EUNSAFE'), bad);
    }
    assertRunCgroup(m, `${m}/rd-00aa`);
    assertRunCgroup(m, `${m}/rd-00aa/node-1`);
  });
});

const mount = mountHere;
const skip = process.getuid?.() !== 0 ? 'needs root (creates namespaces and cgroups)' : mount === null ? 'cgroup v2 is not mounted' : false;

/** The cgroup v2 line of /proc/self/cgroup as the process printed it: a path relative to the mount. */
function cgroupLine(stdout: string): string {
  return stdout.split('\n').find((l) => l.startsWith('0::'))?.slice(3) ?? `no cgroup v2 line in ${JSON.stringify(stdout)}`;
}

/** The path /proc/<pid>/cgroup shows for a lab cgroup directory. */
function relativeToMount(dir: string): string {
  return dir.slice(mount!.length);
}

function cgroupPids(dir: string): number[] {
  return readFileSync(`${dir}/cgroup.procs`, 'utf8').split('\n').filter((s) => s !== '').map(Number);
}

/** Alive and not a zombie. */
function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

function isBpfFs(): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === BPF_FS && / - bpf /.test(l));
}

/**
 * Pin directories can only be made on bpffs. Mounts it at its usual place (as systemd does at
 * boot) when nothing is there, and leaves it: an agent of another test may be pinning there.
 */
async function ensureBpfFs(): Promise<void> {
  if (!isBpfFs()) await execOk(['mount', '-t', 'bpf', 'bpf', BPF_FS]);
}

function oneNodeTopology(): Topology {
  const t = defaultTopology();
  return { ...t, nodes: t.nodes.slice(0, 1), pods: t.pods.slice(0, 1), routes: [] };
}

describe('lab cgroups: placement', { skip }, () => {
  let lab: Lab | undefined;
  const L = (): Lab => {
    assert.ok(lab, 'lab was not created');
    return lab;
  };

  before(async () => {
    await ensureBpfFs();
    lab = await Lab.create(defaultTopology(), { logger: memoryLogger() });
    await lab.startServers();
  });

  after(async () => {
    await lab?.destroy();
  });

  it('gives every node a cgroup under <mount>/rd-<run>', () => {
    const parent = `${mount}/${runName(L().runId)}`;
    assert.equal(L().cgroup('node-1'), `${parent}/node-1`);
    assert.equal(L().cgroup('node-2'), `${parent}/node-2`);
    assert.ok(existsSync(`${parent}/node-1/cgroup.procs`) && existsSync(`${parent}/node-2/cgroup.procs`));
    assert.deepEqual(readdirSync(parent, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort(), ['node-1', 'node-2']);
    assert.equal(L().cgroupOf('pod-1b'), L().cgroup('node-1'));
    assert.equal(L().cgroupOf('pod-2a'), L().cgroup('node-2'));
    assert.equal(L().cgroupOf('client'), undefined);
    assert.equal(L().cgroupOf('fabric'), undefined);
    for (const notANode of ['pod-1a', 'client', 'fabric', 'nope']) assert.throws(() => L().cgroup(notANode), isLabError('EROLE'), notANode);
    assert.throws(() => L().cgroupOf('nope'), isLabError('EROLE'));
    assert.equal(L().bpfPinPath('node-2'), `${BPF_FS}/rd-${L().runId}-node-2`);
  });

  it('runs the pod servers in their node cgroup', () => {
    for (const [node, pods] of [['node-1', ['pod-1a', 'pod-1b']], ['node-2', ['pod-2a', 'pod-2b']]] as const) {
      const names = cgroupPids(L().cgroup(node)).map((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'))
        .filter((argv) => argv.some((a) => a.endsWith('podserver.js')))
        .map((argv) => argv[argv.indexOf('--name') + 1]);
      assert.deepEqual(names.sort(), [...pods], `pod servers in ${node}'s cgroup`);
    }
  });

  it('exec from a node or a pod runs in the node cgroup, from a client or the fabric outside every lab cgroup', async () => {
    const cases: [string, string | undefined][] = [
      ['node-1', L().cgroup('node-1')], ['pod-1a', L().cgroup('node-1')],
      ['node-2', L().cgroup('node-2')], ['pod-2b', L().cgroup('node-2')],
      ['client', undefined], ['fabric', undefined],
    ];
    for (const [role, cg] of cases) {
      const seen = cgroupLine((await L().execOk(role, ['cat', '/proc/self/cgroup'])).stdout);
      if (cg === undefined) assert.ok(!seen.startsWith(`/${runName(L().runId)}`), `${role} runs in ${seen}`);
      else assert.equal(seen, relativeToMount(cg), role);
    }
  });

  it('spawn starts a pod process inside the node cgroup, as the spawned pid, and signals reach it', async () => {
    let first = '';
    const printer = L().spawn('pod-2a', ['cat', '/proc/self/cgroup'], { onStdoutLine: (l) => { if (l.startsWith('0::')) first = l.slice(3); } });
    assert.equal(await printer.exited, 0);
    assert.equal(first, relativeToMount(L().cgroup('node-2')));

    const sleeper = L().spawn('pod-1b', ['sleep', '300']);
    assert.equal(sleeper.cgroup, L().cgroup('node-1'));
    const pid = sleeper.child.pid!;
    const deadline = Date.now() + 5000;
    while (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'sleep' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(readFileSync(`/proc/${pid}/comm`, 'utf8').trim(), 'sleep', 'the spawned pid became the program');
    assert.ok(cgroupPids(L().cgroup('node-1')).includes(pid));
    await L().stopProcess(sleeper, 5000);
    assert.equal(sleeper.child.signalCode, 'SIGTERM');
  });

  it('probes run in the cgroup of the role they start from', async () => {
    // 198.18.0.77 is a free node-network address: ARP gets no answer, so each probe waits out its
    // timeout, long enough to see where it runs.
    const commsIn = (node: string): string[] => cgroupPids(L().cgroup(node)).map((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').map((a) => a.split('/').pop()).join(' ');
      } catch {
        return '';
      }
    });
    const during = async (probe: Promise<unknown>, look: () => boolean): Promise<boolean> => {
      let seen = false;
      let done = false;
      void probe.finally(() => { done = true; });
      while (!done && !seen) {
        seen = look();
        await new Promise((r) => setTimeout(r, 20));
      }
      await probe;
      return seen;
    };
    const curlIn = (node: string) => () => commsIn(node).some((c) => c.startsWith('curl '));
    const udpIn = (node: string) => () => commsIn(node).some((c) => c.includes('udpclient.js'));
    assert.ok(await during(L().curl('pod-2a', 'http://198.18.0.77:80/', { timeoutMs: 1000 }), curlIn('node-2')), 'curl from pod-2a in node-2\'s cgroup');
    assert.ok(await during(L().curl('node-1', 'http://198.18.0.77:80/', { timeoutMs: 1000 }), curlIn('node-1')), 'curl from node-1 in node-1\'s cgroup');
    assert.ok(await during(L().udp('pod-1b', '198.18.0.77', 5300, 'x', { timeoutMs: 1000 }), udpIn('node-1')), 'udp from pod-1b in node-1\'s cgroup');
    assert.ok(!(await during(L().curl('client', 'http://198.18.0.77:80/', { timeoutMs: 1000 }), () => curlIn('node-1')() || curlIn('node-2')())), 'a client\'s curl in no node cgroup');
  });

  it('keepMounts enters only the network namespace: cgroupfs and bpffs stay visible', async () => {
    const cg = L().cgroup('node-1');
    const kept = await L().execOk('node-1', ['sh', '-c', 'cat /proc/self/cgroup; ip -4 -o addr show dev eth0; ls "$0"', cg], { keepMounts: true });
    assert.equal(cgroupLine(kept.stdout), relativeToMount(cg));
    assert.match(kept.stdout, /198\.18\.0\.2\//, 'in node-1\'s network namespace');
    assert.match(kept.stdout, /cgroup\.procs/, 'cgroupfs is visible');
    const remounted = await L().exec('node-1', ['ls', `${cg}/cgroup.procs`]);
    assert.notEqual(remounted.code, 0, 'ip netns exec hides cgroupfs (it remounts /sys)');

    let line = '';
    const p = L().spawn('pod-2b', ['cat', '/proc/self/cgroup'], { keepMounts: true, onStdoutLine: (l) => { if (l.startsWith('0::')) line = l.slice(3); } });
    assert.equal(await p.exited, 0);
    assert.equal(line, relativeToMount(L().cgroup('node-2')));
  });

  it('destroy kills what runs in the cgroups and removes them and the run\'s pin directories', async () => {
    const l = L();
    const parent = `${mount}/${runName(l.runId)}`;
    const pins = [l.bpfPinPath('node-1'), l.bpfPinPath('node-2')];
    for (const p of pins) mkdirSync(`${p}/links`, { recursive: true });
    // A child the lab does not track: only the cgroup (and the namespace) know about it.
    const stray = Number((await l.execOk('node-1', ['sh', '-c', 'sleep 300 >/dev/null 2>&1 </dev/null & echo $!'])).stdout.trim());
    assert.ok(cgroupPids(l.cgroup('node-1')).includes(stray));
    await l.destroy();
    assert.equal(existsSync(parent), false, `${parent} is gone`);
    for (const p of pins) assert.equal(existsSync(p), false, `${p} is gone`);
    assert.equal(alive(stray), false, 'the stray process was killed');
  });
});

describe('lab cgroups: teardown', { skip }, () => {
  before(ensureBpfFs);

  it('destroySync removes the cgroups and pin directories too', async () => {
    const lab = await Lab.create(oneNodeTopology(), { logger: memoryLogger() });
    const parent = `${mount}/${runName(lab.runId)}`;
    const sleeper = lab.spawn('pod-1a', ['sleep', '300']);
    const stray = Number((await lab.execOk('node-1', ['sh', '-c', 'sleep 300 >/dev/null 2>&1 </dev/null & echo $!'])).stdout.trim());
    mkdirSync(`${lab.bpfPinPath('node-1')}/maps`, { recursive: true });
    lab.destroySync();
    assert.equal(existsSync(parent), false);
    assert.equal(existsSync(lab.bpfPinPath('node-1')), false);
    assert.equal(alive(stray), false);
    await sleeper.exited;
  });

  it('cleanLeftovers kills the processes of a leftover rd-<run> cgroup and removes it and its pins', async () => {
    const runId = newRunId();
    const parent = `${mount}/${runName(runId)}`;
    const cg = `${parent}/node-1`;
    mkdirSync(cg, { recursive: true });
    const pin = `${BPF_FS}/rd-${runId}-node-1`;
    mkdirSync(`${pin}/maps`, { recursive: true });
    const orphan = spawn('/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec sleep 300', cg], { stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => orphan.on('exit', (_code, signal) => resolve(signal)));
    const deadline = Date.now() + 5000;
    while (!cgroupPids(cg).includes(orphan.pid!) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(cgroupPids(cg).includes(orphan.pid!), 'the fake leftover has a process');

    try {
      const removed = await Lab.cleanLeftovers({ runId, logger: memoryLogger() });
      const timeout = new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 3000).unref());
      assert.equal(await Promise.race([exited, timeout]), 'SIGKILL');
      assert.equal(existsSync(parent), false);
      assert.equal(existsSync(pin), false);
      assert.ok(removed.includes(parent) && removed.includes(pin), `removed: ${removed.join(', ')}`);
      assert.deepEqual(listRunCgroups(mount!, runId), []);
    } finally {
      orphan.kill('SIGKILL');
    }
  });

  it('refuses a run id whose cgroup is left over, and leaves that cgroup alone', async () => {
    const runId = newRunId();
    const parent = `${mount}/${runName(runId)}`;
    mkdirSync(parent);
    try {
      await assert.rejects(Lab.create(oneNodeTopology(), { logger: memoryLogger(), runId }), (e: unknown) => isLabError('ECREATE')(e) && (e as Error).message.includes(parent));
      assert.ok(existsSync(parent));
    } finally {
      await Lab.cleanLeftovers({ runId, logger: memoryLogger() });
    }
    assert.equal(existsSync(parent), false);
  });

  it('runs without cgroups when asked, and says why cgroup() cannot answer', async () => {
    const lab = await Lab.create(oneNodeTopology(), { logger: memoryLogger(), cgroups: false });
    try {
      assert.throws(() => lab.cgroup('node-1'), isLabError('ECGROUP'));
      assert.equal(lab.cgroupOf('pod-1a'), undefined);
      assert.equal(existsSync(`${mount}/${runName(lab.runId)}`), false);
      const seen = cgroupLine((await lab.execOk('pod-1a', ['cat', '/proc/self/cgroup'])).stdout);
      assert.ok(!seen.startsWith('/rd-'), seen);
    } finally {
      await lab.destroy();
    }
  });
});

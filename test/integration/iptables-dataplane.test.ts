// The iptables data plane against the real iptables-restore/-save, inside a throw-away network
// namespace per backend (rd-<random>-ipt, loopback only, no default route: nothing can leave the
// machine). Root only. The root namespace's rules are never touched.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { DataPlaneError } from '../../src/dataplane/dataplane.js';
import { portChains } from '../../src/dataplane/iptables/chains.js';
import { IptablesDataPlane } from '../../src/dataplane/iptables/index.js';
import type { IptablesBackend } from '../../src/dataplane/iptables/index.js';
import { diff } from '../../src/model/diff.js';
import type { ServiceTable } from '../../src/model/types.js';
import { memoryLogger } from '../../src/observe/log.js';
import { exec, execOk } from '../../src/util/exec.js';
import type { ExecOptions } from '../../src/util/exec.js';
import { CFG, ep, sp, tableOf } from '../support/iptables.js';
import { createIPv6Scratch, removeScratch, startTcpServer, tcpConnect } from '../support/netns-tcp.js';

const isRoot = process.getuid?.() === 0;

const svc1 = sp({ namespace: 'ns1', name: 'svc1', clusterIP: '172.30.0.41', endpoints: [ep('10.180.0.1', 8080)] });
const svc2 = sp({ namespace: 'ns2', name: 'svc2', clusterIP: '172.30.0.42', nodePort: 30080, externalPolicyLocal: true,
  healthCheckNodePort: 30000, loadBalancerIPs: ['192.0.2.10'], loadBalancerSourceRanges: ['198.51.100.0/24'],
  endpoints: [ep('10.180.0.1', 8080, { local: true }), ep('10.180.1.1', 8080)] });
const svc3 = sp({ namespace: 'ns3', name: 'svc3', clusterIP: '172.30.0.43' }); // no endpoints: REJECT
const c1 = portChains(svc1);
const c2 = portChains(svc2);

/** iptables-save without its timestamps and counters, for before/after comparisons. */
function normalise(save: string): string {
  return save.split('\n').filter((l) => !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]/, '')).join('\n');
}

for (const backend of ['nft', 'legacy'] as const satisfies readonly IptablesBackend[]) {
  describe(`iptables data plane in a network namespace (${backend})`, { skip: isRoot ? false : 'needs root' }, () => {
    const ns = `rd-${randomBytes(4).toString('hex')}-ipt`;
    const nsExec = (argv: readonly string[], opts?: ExecOptions) => exec(['ip', 'netns', 'exec', ns, ...argv], opts);
    const save = async (): Promise<string> => (await execOk(['ip', 'netns', 'exec', ns, `iptables-${backend}-save`])).stdout;
    const log = memoryLogger();
    const dp = new IptablesDataPlane({ config: CFG, logger: log, exec: nsExec, backend });
    let server: ChildProcess | undefined;
    let t1: ServiceTable = new Map();

    before(async () => {
      await execOk(['ip', 'netns', 'add', ns]);
      // Loopback only: the endpoint address lives on lo, the service range routes to lo so that
      // local connections traverse nat OUTPUT. No other interface, no default route.
      await execOk(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      await execOk(['ip', '-n', ns, 'addr', 'add', '10.180.0.1/32', 'dev', 'lo']);
      await execOk(['ip', '-n', ns, 'route', 'add', '172.30.0.0/16', 'dev', 'lo']);
    });

    after(async () => {
      if (server !== undefined && server.exitCode === null) server.kill('SIGKILL');
      await exec(['ip', 'netns', 'del', ns]);
    });

    test('a full apply programs kube-proxy\'s chains and jump rules', async () => {
      t1 = tableOf(svc1, svc2, svc3);
      await dp.apply(diff(new Map(), t1), t1, { full: true });
      const text = await save();
      for (const ch of ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ', 'KUBE-EXTERNAL-SERVICES',
        'KUBE-FORWARD', 'KUBE-PROXY-FIREWALL', c1.svc, c1.sep('10.180.0.1:8080'), c2.svc, c2.svl, c2.ext, c2.fw]) {
        assert.match(text, new RegExp(`^:${ch} `, 'm'), ch);
      }
      assert.match(text, /^-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES$/m);
      assert.match(text, /^-A KUBE-SERVICES -d 172\.30\.0\.43\/32 -p tcp -m comment --comment "ns3\/svc3:p80 has no endpoints" -m tcp --dport 80 -j REJECT/m);
      assert.match(text, /^-A KUBE-POSTROUTING .*-j MASQUERADE --random-fully$/m);
      const fe = await dp.programmed();
      assert.deepEqual(fe.find((f) => f.kind === 'clusterIP' && f.service === 'ns1/svc1:p80/TCP')?.backends, ['10.180.0.1:8080']);
      assert.deepEqual(fe.find((f) => f.kind === 'loadBalancerIP')?.backends, ['10.180.0.1:8080']);
      assert.deepEqual(fe.find((f) => f.kind === 'nodePort')?.address, '*:30080');
      assert.deepEqual(fe.find((f) => f.service === 'ns3/svc3:p80/TCP'), { service: 'ns3/svc3:p80/TCP', kind: 'clusterIP', address: '172.30.0.43:80', backends: [] },
        'a service without endpoints is read back too (its REJECT rule)');
      // A second full apply changes nothing and does not duplicate the jump rules.
      await dp.apply([], t1, { full: true });
      assert.equal(normalise(await save()), normalise(text));
    });

    test('a connection to the ClusterIP reaches the endpoint through the DNAT', async () => {
      server = await startTcpServer(ns, '10.180.0.1', 8080, 'pong');
      const client = await tcpConnect(ns, '172.30.0.41', 80);
      assert.equal(client.stdout, 'pong', client.stderr);
    });

    test('a partial apply rewrites the changed service only and deletes its stale chains', async () => {
      const svc2b = sp({ ...svc2, endpoints: [ep('10.180.0.1', 8080, { local: true }), ep('10.180.2.1', 8080)] });
      const t2 = tableOf(svc1, svc2b, svc3);
      await dp.apply(diff(t1, t2), t2, { full: false });
      const text = await save();
      assert.match(text, new RegExp(`^:${c2.sep('10.180.2.1:8080')} `, 'm'));
      assert.doesNotMatch(text, new RegExp(`^:${c2.sep('10.180.1.1:8080')} `, 'm'));
      assert.match(text, new RegExp(`^:${c1.sep('10.180.0.1:8080')} `, 'm'), 'unchanged service kept');
      assert.doesNotMatch(dp.lastTransaction, new RegExp(`:${c1.svc} `));
      t1 = t2;
    });

    test('a transaction the tools reject leaves the previous rules in place', async () => {
      const before = normalise(await save());
      const bad = sp({ namespace: 'ns9', name: 'bad', clusterIP: '10.0.0.300', endpoints: [ep('10.180.0.9', 80)] });
      const t2 = tableOf(...[...t1.values()].flat(), bad);
      await assert.rejects(dp.apply(diff(t1, t2), t2, { full: false }), (e: unknown) => {
        assert.ok(e instanceof DataPlaneError, String(e));
        assert.equal(e.code, 'EAPPLY');
        assert.match(e.detail ?? '', /10\.0\.0\.300/);
        return true;
      });
      assert.equal(normalise(await save()), before);
      // The next sync (forced full) repairs everything from the table.
      await dp.apply(diff(t2, t1), t1, { full: false });
      assert.equal(normalise(await save()), before);
    });

    test('backend detection picks this namespace\'s backend', async () => {
      const probe = new IptablesDataPlane({ config: CFG, logger: log, exec: nsExec });
      await probe.init();
      // With our rules present the one with more rules wins; nft also wins a tie (an empty node).
      assert.ok(log.lines.some((l) => l.includes('iptables backend selected') && l.includes(`backend=${backend}`) && !l.includes('configured')));
    });

    test('cleanup leaves no KUBE- chain and no jump rule', async () => {
      await dp.cleanup();
      const text = await save();
      assert.doesNotMatch(text, /KUBE-/, text);
      await dp.cleanup(); // idempotent
    });
  });
}

describe('IPv6 service ports through ip6tables in a network namespace', { skip: isRoot ? false : 'needs root' }, () => {
  const ns = `rd-${randomBytes(4).toString('hex')}-ip6`;
  const nsExec = (argv: readonly string[], opts?: ExecOptions) => exec(['ip', 'netns', 'exec', ns, ...argv], opts);
  const dp = new IptablesDataPlane({ config: { ...CFG, clusterCIDRs: ['10.0.0.0/8', 'fd00:180::/48'] }, logger: memoryLogger(), exec: nsExec, backend: 'nft' });
  let server: ChildProcess | undefined;

  before(() => createIPv6Scratch(ns));
  after(() => removeScratch(ns, server));

  test('a connection to an IPv6 ClusterIP reaches its endpoint; IPv4 and IPv6 rules stay apart; cleanup removes both', async () => {
    const v6 = sp({ namespace: 'ns1', name: 'svc6', clusterIP: 'fd00:30::41', family: 6, endpoints: [ep('fd00:180::1', 8080)] });
    const v4 = sp({ namespace: 'ns1', name: 'svc4', clusterIP: '172.30.0.44', endpoints: [ep('10.180.0.4', 8080)] });
    const t = tableOf(v4, v6);
    await dp.apply(diff(new Map(), t), t, { full: true });
    const save6 = (await execOk(['ip', 'netns', 'exec', ns, 'ip6tables-nft-save', '-t', 'nat'])).stdout;
    const save4 = (await execOk(['ip', 'netns', 'exec', ns, 'iptables-nft-save', '-t', 'nat'])).stdout;
    assert.match(save6, /-A KUBE-SERVICES -d fd00:30::41\/128 .*-j KUBE-SVC-/);
    assert.doesNotMatch(save6, /172\.30\.0\.44/);
    assert.match(save4, /-A KUBE-SERVICES -d 172\.30\.0\.44\/32 /);
    assert.doesNotMatch(save4, /fd00:/);

    server = await startTcpServer(ns, 'fd00:180::1', 8080, 'pong6');
    const client = await tcpConnect(ns, 'fd00:30::41', 80);
    assert.equal(client.stdout, 'pong6', client.stderr);
    assert.deepEqual((await dp.programmed()).map((f) => f.address).sort(), ['172.30.0.44:80', '[fd00:30::41]:80']);

    await dp.cleanup();
    for (const tool of ['iptables-nft-save', 'ip6tables-nft-save']) {
      assert.doesNotMatch((await execOk(['ip', 'netns', 'exec', ns, tool])).stdout, /KUBE-/, tool);
    }
  });
});

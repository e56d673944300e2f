// The nftables table against `rudder trace`, packet by packet: every conformance fixture
// (test/conformance and ../shared/conformance) is loaded as `rudder trace` loads it, written by
// the nftables data plane into a fake kernel, and each case is walked through the table's rules
// (test/support/nftables-sim.ts) and traced; verdict, backends and masquerade must agree. Beyond
// the fixtures' own cases, every IPv4 frontend is probed from a pod, the node, an outside client
// and each of its endpoints (hairpin).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadTable } from '../../src/cli/load.js';
import { NftablesDataPlane } from '../../src/dataplane/nftables/index.js';
import { diff } from '../../src/model/diff.js';
import { indexTable, trace } from '../../src/model/trace.js';
import { allPorts, frontends } from '../../src/model/types.js';
import type { Protocol } from '../../src/source/objects.js';
import { memoryLogger } from '../../src/observe/log.js';
import { allFixtureFiles, flagsOf, readFixture, ROOT } from '../support/conformance-fixtures.js';
import { FakeNftExec } from '../support/nftables.js';
import { NftSim, type SimPacket } from '../support/nftables-sim.js';

const files = allFixtureFiles();

for (const file of files) {
  test(`nftables table answers as rudder trace: ${file.slice(ROOT.length - 4)}`, async (t) => {
    const f = readFixture(file);
    const { table, config } = loadTable(f.manifests, flagsOf(f), memoryLogger());
    const fake = new FakeNftExec();
    const dp = new NftablesDataPlane({ config, logger: memoryLogger(), exec: fake.fn, deleteChainsAtOnce: true });
    await dp.apply(diff(new Map(), table), table, { full: true });
    const sim = new NftSim(fake.kernel.table()!, config.nodeIPs.filter((ip) => !ip.includes(':')));
    const index = indexTable(table);

    const packets: Array<SimPacket & { name: string }> = f.cases.map((c) => ({ name: c.name, src: c.src, dst: c.dst, port: c.port, proto: c.proto }));
    const pod = (cidr: string | undefined, n: number): string[] => (cidr === undefined ? [] : [cidr.replace(/\.0\/\d+$/, `.${n}`).replace(/0\.0\/\d+$/, `1.${n}`)]);
    const v4cidr = config.clusterCIDRs.find((c) => !c.includes(':'));
    const sources = [...pod(v4cidr, 77), ...config.nodeIPs.filter((ip) => !ip.includes(':')), '203.0.113.99'];
    for (const sp of allPorts(table)) {
      if (sp.family !== 4) continue;
      const eps = sp.endpoints.map((e) => e.ip);
      for (const fe of frontends(sp)) {
        const dsts = fe.kind === 'nodePort' ? config.nodeIPs.filter((ip) => !ip.includes(':')) : [fe.ip];
        for (const dst of dsts) {
          for (const src of [...sources, ...eps]) packets.push({ name: `probe ${fe.kind} of ${sp.id} from ${src}`, src, dst, port: fe.port, proto: sp.protocol });
        }
      }
    }
    let checked = 0;
    for (const p of packets) {
      if (p.src.includes(':') || p.dst.includes(':')) continue; // the table is IPv4
      const want = trace(table, config, { src: p.src, dst: p.dst, port: p.port, protocol: p.proto.toUpperCase() as Protocol }, index);
      const got = sim.walk(p);
      const expected = { verdict: want.verdict, backends: want.verdict === 'forward' ? want.backends : [], masquerade: want.verdict === 'forward' ? want.masquerade : false };
      assert.deepEqual(got, expected, `${p.name}: ${p.proto} ${p.src} -> ${p.dst}:${p.port}\n  trace: ${want.explanation.join(' ')}`);
      checked++;
    }
    assert.ok(checked > 0);
    t.diagnostic(`${checked} packets`);
  });
}

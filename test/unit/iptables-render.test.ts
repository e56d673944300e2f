// Golden files for the iptables layout, and a line-by-line comparison with the output kube-proxy's
// own proxier_test.go (TestOverallIPTablesRules) expects for the same services.
// UPDATE_GOLDEN=1 rewrites test/golden/iptables/*.txt; otherwise they are compared exactly.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { portChains, servicePortName } from '../../src/dataplane/iptables/chains.js';
import { probability, render, renderConfig } from '../../src/dataplane/iptables/render.js';
import { Transaction } from '../../src/dataplane/iptables/transaction.js';
import type { ProxyConfig, ServicePort } from '../../src/model/types.js';
import { CFG, ep, sp } from '../support/iptables.js';
import { SCENARIOS } from '../support/scenarios.js';

const GOLDEN_DIR = fileURLToPath(new URL('../../../test/golden/iptables/', import.meta.url));

function renderText(ports: ServicePort[], cfg: ProxyConfig = CFG): string {
  const { config } = renderConfig(cfg);
  const { tx } = render({ ports, write: null }, config);
  assert.equal(tx.error(), null);
  return tx.toString();
}

function golden(name: string, actual: string): void {
  const path = GOLDEN_DIR + name + '.txt';
  if (process.env['UPDATE_GOLDEN'] === '1') {
    mkdirSync(GOLDEN_DIR, { recursive: true });
    writeFileSync(path, actual);
    return;
  }
  assert.equal(actual, readFileSync(path, 'utf8'), `golden ${name}.txt differs (UPDATE_GOLDEN=1 rewrites it)`);
}

test('chain names match kube-proxy (hashes taken from proxier_test.go)', () => {
  const s1 = sp({ namespace: 'ns1', name: 'svc1', clusterIP: '172.30.0.41' });
  const c = portChains(s1);
  assert.equal(c.svc, 'KUBE-SVC-XPGD46QRK7WJZT7O');
  assert.equal(c.sep('10.180.0.1:80'), 'KUBE-SEP-SXIVWICOYRO3J4NJ');
  assert.equal(portChains(sp({ namespace: 'ns2', name: 'svc2', clusterIP: '172.30.0.42' })).ext, 'KUBE-EXT-GNZBNJ2PO5MGZ6GT');
  assert.equal(portChains(sp({ namespace: 'ns5', name: 'svc5', clusterIP: '172.30.0.45' })).fw, 'KUBE-FW-NUKIZ6OKUXPJNT4C');
  assert.equal(portChains(sp({ namespace: 'ns5', name: 'svc5', clusterIP: '172.30.0.45' })).sep('10.180.0.3:80'), 'KUBE-SEP-I77PXRDZVX7PMWMN');
  assert.equal(servicePortName({ namespace: 'ns', name: 'svc', portName: '' }), 'ns/svc');
  assert.equal(servicePortName({ namespace: 'ns', name: 'svc', portName: 'dns' }), 'ns/svc:dns');
});

test('probability is formatted like Go %0.10f, ties to even', () => {
  assert.equal(probability(2), '0.5000000000');
  assert.equal(probability(3), '0.3333333333');
  assert.equal(probability(6), '0.1666666667');
  assert.equal(probability(2048), '0.0004882812');
  assert.equal(probability(4096), '0.0002441406');
});

test('transaction: adding never throws, bad input is reported, quoting follows kube-proxy', () => {
  const tx = new Transaction();
  tx.chain('nat', 'KUBE-SERVICES').append('nat', 'KUBE-SERVICES', '-m', 'comment', '--comment', 'a b', '-j', 'ACCEPT');
  assert.equal(tx.error(), null);
  assert.equal(tx.toString(), '*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -m comment --comment "a b" -j ACCEPT\nCOMMIT\n');
  tx.append('nat', 'X'.repeat(29), '-j', 'ACCEPT');
  tx.append('nat', 'KUBE-SERVICES', '--comment', 'evil"\n-F');
  assert.match(tx.error() ?? '', /invalid chain name/);
  assert.equal(tx.rules, 1);
});

const scenarios = SCENARIOS;

for (const [name, s] of Object.entries(scenarios)) {
  test(`golden ${name}`, () => golden(name, renderText(s.ports, s.cfg)));
}

// kube-proxy's expected output for TestOverallIPTablesRules, with the differences Rudder has on
// purpose applied below (each one named), compared as sorted lines per table.
const KUBE_PROXY_OVERALL = `*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-NODEPORTS -m comment --comment "ns2/svc2:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT
-A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by KUBE-FW-NUKIZ6OKUXPJNT4C" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP
COMMIT
*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXT-4SW47YFZTEDKD3PK - [0:0]
:KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-EXT-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-EXT-X27LE4BHSL4DOUIK - [0:0]
:KUBE-FW-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-C6EBXVWJJZMIWKLZ - [0:0]
:KUBE-SEP-I77PXRDZVX7PMWMN - [0:0]
:KUBE-SEP-OYPFS5VJICHGATKP - [0:0]
:KUBE-SEP-RS4RBKLTHTF2IUXJ - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-SEP-UKSFD7AGPMPPLUHC - [0:0]
:KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]
:KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SVC-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3001 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3003 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-X27LE4BHSL4DOUIK
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK
-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3002 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 3002 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 external IP" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK
-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 external IP" -m tcp -p tcp -d 192.168.99.33 --dport 80 -j KUBE-EXT-4SW47YFZTEDKD3PK
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-FW-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-EXT-4SW47YFZTEDKD3PK -m comment --comment "masquerade traffic for ns4/svc4:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-4SW47YFZTEDKD3PK -j KUBE-SVC-4SW47YFZTEDKD3PK
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "masquerade traffic for ns3/svc3:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL"
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -s 10.180.0.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.5:80
-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -s 10.180.0.4 -j KUBE-MARK-MASQ
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.4:80
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.4:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.5:80" -j KUBE-SEP-C6EBXVWJJZMIWKLZ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80" -j KUBE-SEP-RS4RBKLTHTF2IUXJ
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --rcheck --seconds 10800 --reap -j KUBE-SEP-I77PXRDZVX7PMWMN
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -j KUBE-SEP-I77PXRDZVX7PMWMN
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -j KUBE-SEP-OYPFS5VJICHGATKP
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
COMMIT
`;

function tablesOf(text: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  let cur: string[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) out[line.slice(1)] = cur = [];
    else if (line !== '' && line !== 'COMMIT') cur.push(line);
  }
  for (const k of Object.keys(out)) out[k]!.sort();
  return out;
}

test('same rules as kube-proxy TestOverallIPTablesRules, modulo the documented differences', () => {
  const ports = [
    sp({ namespace: 'ns1', name: 'svc1', clusterIP: '172.30.0.41', endpoints: [ep('10.180.0.1', 80)] }),
    sp({ namespace: 'ns2', name: 'svc2', clusterIP: '172.30.0.42', nodePort: 3001, externalPolicyLocal: true, loadBalancerIPs: ['1.2.3.4'],
      externalIPs: ['192.168.99.22'], healthCheckNodePort: 30000, endpoints: [ep('10.180.0.2', 80)] }),
    sp({ namespace: 'ns3', name: 'svc3', clusterIP: '172.30.0.43', nodePort: 3003, endpoints: [ep('10.180.0.3', 80)] }),
    sp({ namespace: 'ns4', name: 'svc4', clusterIP: '172.30.0.44', externalIPs: ['192.168.99.33'],
      endpoints: [ep('10.180.0.4', 80), ep('10.180.0.5', 80, { local: true })] }),
    sp({ namespace: 'ns5', name: 'svc5', clusterIP: '172.30.0.45', nodePort: 3002, loadBalancerIPs: ['5.6.7.8'],
      loadBalancerSourceRanges: ['203.0.113.0/25'], affinityTimeoutSeconds: 10800, endpoints: [ep('10.180.0.3', 80)] }),
    sp({ namespace: 'ns6', name: 'svc6', clusterIP: '172.30.0.46' }),
  ];
  const expected = KUBE_PROXY_OVERALL.split('\n')
    // 1. No localhost NodePorts (no route_localnet): no KUBE-FIREWALL chain, no 127.0.0.0/8 NodePort
    //    rules, and the KUBE-NODEPORTS tail call excludes 127.0.0.0/8, as kube-proxy does with
    //    --iptables-localhost-nodeports=false.
    .filter((l) => !l.includes('KUBE-FIREWALL ') && !l.includes('-d 127.0.0.0/8 --dport'))
    .map((l) => l.replace('--dst-type LOCAL -j KUBE-NODEPORTS', '--dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS'))
    // 2. No nfacct counters.
    .map((l) => l.replace(' -m nfacct --nfacct-name ct_state_invalid_dropped_pkts', ''))
    // 3. iptables 1.8.9 supports --random-fully, which kube-proxy's fake iptables does not claim.
    .map((l) => (l.endsWith('-j MASQUERADE') ? l + ' --random-fully' : l))
    // 4. TCP is refused with a reset, not ICMP (which the kernel rate-limits per host).
    .map((l) => (l.endsWith('-m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT') ? l + ' --reject-with tcp-reset' : l))
    .join('\n');
  const want = tablesOf(expected);
  // 5. Traffic to a ClusterIP on a port no service uses is rejected, as kube-proxy's nftables mode does.
  for (let i = 41; i <= 46; i++) {
    want['filter']!.push(`-A KUBE-SERVICES -m comment --comment "reject traffic to unknown ports of ClusterIPs" -d 172.30.0.${i} -p tcp -j REJECT --reject-with tcp-reset`);
    want['filter']!.push(`-A KUBE-SERVICES -m comment --comment "reject traffic to unknown ports of ClusterIPs" -d 172.30.0.${i} -j REJECT`);
  }
  want['filter']!.sort();
  assert.deepEqual(tablesOf(renderText(ports)), want);
});

test('NodePort addresses come from the model: per family, "primary", and a family without CIDRs of its own', () => {
  const dual: ProxyConfig = { ...CFG, nodeIPs: ['192.168.0.2', '10.0.5.2', 'fd00::2'], nodePortAddresses: ['10.0.0.0/8'] };
  const tail = (cfg: ProxyConfig, family: 4 | 6): string[] => {
    const { config } = renderConfig(cfg, 14, family);
    return render({ ports: [], write: null }, config).tx.toString().split('\n').filter((l) => l.includes('-j KUBE-NODEPORTS') && l.startsWith('-A KUBE-SERVICES'));
  };
  const npComment = '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain"';
  assert.deepEqual(tail(dual, 4), [`-A KUBE-SERVICES ${npComment} -d 10.0.5.2 -j KUBE-NODEPORTS`]);
  // kube-proxy's NewNodePortAddresses: no IPv6 CIDR given means every IPv6 address, not none.
  assert.deepEqual(tail(dual, 6), [`-A KUBE-SERVICES ${npComment} -m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS`]);
  const primary: ProxyConfig = { ...dual, nodePortAddresses: ['primary'] };
  assert.deepEqual(tail(primary, 4), [`-A KUBE-SERVICES ${npComment} -d 192.168.0.2 -j KUBE-NODEPORTS`]);
  assert.deepEqual(tail(primary, 6), [`-A KUBE-SERVICES ${npComment} -d fd00::2 -j KUBE-NODEPORTS`]);
});

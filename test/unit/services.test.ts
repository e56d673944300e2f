// `rudder services` rows come from the frontend records: one row per concrete frontend, with the
// action and active backends of the path the row's policy names.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderProgrammed, serviceRows } from '../../src/cli/services.js';
import type { ProxyConfig } from '../../src/model/types.js';
import { CFG, ep, sp, tableOf } from '../support/iptables.js';

test('service rows: NodePorts on each NodePort address, eTP=Local drops without local endpoints, iTP=Local drops', () => {
  const cfg: ProxyConfig = { ...CFG, nodeIPs: ['192.168.0.2', '10.0.5.2'], nodePortAddresses: ['192.168.0.0/24'] };
  const table = tableOf(
    sp({ namespace: 'ns', name: 'web', clusterIP: '172.30.0.1', nodePort: 30001, externalPolicyLocal: true, endpoints: [ep('10.180.1.2', 80)] }),
    sp({ namespace: 'ns', name: 'itp', clusterIP: '172.30.0.2', internalPolicyLocal: true, endpoints: [ep('10.180.1.3', 80)] }),
    sp({ namespace: 'ns', name: 'none', clusterIP: '172.30.0.3', externalIPs: ['192.168.99.3'] }),
  );
  const rows = serviceRows(table, cfg).map((r) => [r.service, r.type, r.frontend, r.policy, r.action, r.backends.filter((b) => b.active).map((b) => b.address)]);
  assert.deepEqual(rows, [
    ['ns/web:p80/TCP', 'ClusterIP', '172.30.0.1:80', 'iTP=Cluster', 'forward', ['10.180.1.2:80']],
    ['ns/web:p80/TCP', 'NodePort', '192.168.0.2:30001', 'eTP=Local', 'drop', []],
    ['ns/itp:p80/TCP', 'ClusterIP', '172.30.0.2:80', 'iTP=Local', 'drop', []],
    ['ns/none:p80/TCP', 'ClusterIP', '172.30.0.3:80', 'iTP=Cluster', 'reject', []],
    ['ns/none:p80/TCP', 'ExternalIP', '192.168.99.3:80', 'eTP=Cluster', 'reject', []],
  ]);
});

test('service rows: a NodePort with no known address of its family is still listed, on the wildcard address', () => {
  const table = tableOf(sp({ namespace: 'ns', name: 'v6', clusterIP: 'fd00:30::1', family: 6, nodePort: 30002, endpoints: [ep('fd00:180::1', 80)] }));
  const rows = serviceRows(table, CFG).map((r) => [r.type, r.frontend, r.action]);
  assert.deepEqual(rows, [['ClusterIP', '[fd00:30::1]:80', 'forward'], ['NodePort', '[::]:30002', 'forward']]);
});

test('read-back rows with flags get a STATUS column: ok with their flags, or the drift the plane found', () => {
  const out = renderProgrammed([
    { service: 'default/web:http/TCP', kind: 'clusterIP', address: '10.96.0.10:80', backends: ['10.244.1.10:8080'], flags: ['affinity'], protocol: 'TCP', id: 1 },
    { service: 'default/empty:http/TCP', kind: 'clusterIP', address: '10.96.0.11:80', backends: [], flags: ['reject'], protocol: 'TCP', id: 2 },
    { service: 'default/web:http/TCP', kind: 'nodePort', address: '198.18.0.2:30080', backends: [], flags: ['nodeport'], protocol: 'TCP', id: 3, drift: 'backends differ (0 programmed, 1 wanted)' },
  ]);
  const lines = out.trimEnd().split('\n');
  assert.match(lines[0]!, /^SERVICE\s+FRONTEND\s+TYPE\s+STATUS\s+BACKENDS \(programmed\)$/);
  assert.match(out, /default\/empty:http\/TCP\s+10\.96\.0\.11:80\/TCP\s+ClusterIP\s+ok\s+\(none: refused\)/);
  assert.match(out, /10\.96\.0\.10:80\/TCP\s+ClusterIP\s+ok affinity\s+10\.244\.1\.10:8080/);
  assert.match(out, /198\.18\.0\.2:30080\/TCP\s+NodePort\s+DRIFT: backends differ \(0 programmed, 1 wanted\)\s+\(none\)/);
});

test('rows without flags (the netfilter planes) keep the four columns', () => {
  const out = renderProgrammed([{ service: 'default/web:http/TCP', kind: 'clusterIP', address: '10.96.0.10:80', backends: ['10.244.1.10:8080'] }]);
  assert.doesNotMatch(out, /STATUS/);
});

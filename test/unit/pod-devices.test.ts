// Which interfaces this node's pods are reached through (src/source/pod-devices.ts), from the
// routing table as `ip -j route show` prints it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { devicesFor, devicesWithin, parseDirectRoutes } from '../../src/source/pod-devices.js';

const ROUTES4 = JSON.stringify([
  { dst: 'default', gateway: '198.18.0.1', dev: 'eth0', flags: [] },
  { dst: '10.244.1.10', dev: 'veth-a', scope: 'link', flags: [] },
  { dst: '10.244.1.11', dev: 'veth-b', scope: 'link', flags: [] },
  { dst: '10.244.2.0/24', gateway: '198.18.0.3', dev: 'eth0', flags: [] },
  { dst: '10.244.3.0/24', dev: 'cni0', protocol: 'kernel', scope: 'link', prefsrc: '10.244.3.1', flags: [] },
  { dst: '10.244.0.0/16', dev: 'wg0', scope: 'link', flags: [] },
  { dst: '198.18.0.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link', prefsrc: '198.18.0.2', flags: [] },
]);
const ROUTES6 = JSON.stringify([{ dst: 'fd00:10:244:1::5', dev: 'veth-c', metric: 1024, flags: [] }, { type: 'blackhole', dst: 'fd00::/8', dev: 'lo', flags: [] }]);

test('direct routes keep address and device; default, gateway and non-unicast routes are left out; garbage yields none', () => {
  assert.deepEqual(parseDirectRoutes(ROUTES4).map((r) => `${r.dst}@${r.dev}`), ['10.244.1.10@veth-a', '10.244.1.11@veth-b', '10.244.3.0/24@cni0', '10.244.0.0/16@wg0', '198.18.0.0/24@eth0']);
  assert.deepEqual(parseDirectRoutes(ROUTES6).map((r) => `${r.dst}@${r.dev}`), ['fd00:10:244:1::5@veth-c']);
  assert.deepEqual(parseDirectRoutes('not json'), []);
  assert.deepEqual(parseDirectRoutes('{"dst":"x"}'), []);
});

test('a local endpoint\'s interface is its longest direct match: a veth per pod, or the bridge; the external interfaces are never pod interfaces', () => {
  const routes = [...parseDirectRoutes(ROUTES4), ...parseDirectRoutes(ROUTES6)];
  assert.deepEqual(devicesFor(['10.244.1.10', '10.244.1.11', '10.244.3.7', 'fd00:10:244:1::5'], routes, ['eth0']), ['cni0', 'veth-a', 'veth-b', 'veth-c']);
  // An endpoint on the node network (host-network pod) is reached through eth0: excluded.
  assert.deepEqual(devicesFor(['198.18.0.2'], routes, ['eth0']), []);
  // The longest prefix wins: the /16 behind wg0 serves only what no longer route covers.
  assert.deepEqual(devicesFor(['10.244.3.7', '10.244.7.1'], routes, ['eth0']), ['cni0', 'wg0']);
  // Not routed at all, or not an address: no pod interface.
  assert.deepEqual(devicesFor(['192.0.2.1', 'not-an-ip'], routes, ['eth0']), []);
});

test('every local pod\'s interface: the direct routes inside the cluster CIDRs, a veth per pod or a bridge\'s subnet, never the node\'s own', () => {
  const routes = [
    { dst: '10.244.1.10', dev: 'v-pod-1a' }, { dst: '10.244.1.11', dev: 'v-pod-1b' },
    { dst: '10.244.3.0/24', dev: 'cni0' }, { dst: '10.0.0.0/8', dev: 'eth1' },
    { dst: '198.18.0.0/24', dev: 'eth0' }, { dst: 'fd00:244::5', dev: 'v-pod-6' }, { dst: '10.244.1.12', dev: 'eth0' },
  ];
  assert.deepEqual(devicesWithin(routes, ['10.244.0.0/16'], ['eth0']), ['cni0', 'v-pod-1a', 'v-pod-1b'],
    'a route wider than the cluster CIDR (10.0.0.0/8) is not a pod\'s; the external interface is left out');
  assert.deepEqual(devicesWithin(routes, ['10.244.0.0/16', 'fd00:244::/64']), ['cni0', 'eth0', 'v-pod-1a', 'v-pod-1b', 'v-pod-6']);
  assert.deepEqual(devicesWithin(routes, []), []);
});

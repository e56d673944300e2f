// Turns a validated topology into namespaces, links, addresses and routes.
//
//   client ─┐                     ┌─ node-1 ── v-pod-1a ═ eth0 pod-1a
//           ├─ fabric (bridge br0)┤          └ v-pod-1b ═ eth0 pod-1b
//           │                     └─ node-2 ── ...
//
// Every veth is created from inside a lab namespace with its peer placed straight into another
// lab namespace (`ip -n A link add eth0 type veth peer name X netns B`), so nothing is ever
// created in the root namespace. No namespace gets a default route: each knows only the lab's
// ranges, so a mistake ends in "network unreachable", never in a packet leaving the machine.

import type { Logger } from '../observe/log.js';
import { parseCidr4 } from './ipv4.js';
import { addNamespace, ipIn, sysctlIn } from './netns.js';
import { FABRIC_BRIDGE, FABRIC_ROLE, ifName, podGateway, type NodeSpec, type Topology } from './topology.js';

export interface BuildContext {
  topology: Topology;
  logger: Logger;
  /** Namespace name of a role. */
  ns(role: string): string;
  /** Called before a namespace is created, so teardown knows it even if creation fails half-way. */
  track(ns: string): void;
  /** Throws if the lab is being destroyed; called between steps. */
  checkAlive(): void;
}

/** Sysctls for every lab namespace, set before its interfaces exist so `default` applies to them. */
const COMMON_SYSCTLS = {
  'net.ipv4.conf.all.rp_filter': 0,
  'net.ipv4.conf.default.rp_filter': 0,
  // A node forwarding client traffic back out of eth0 (LB IP on node-1, endpoint on node-2) would
  // send an ICMP redirect; a client that honoured it would bypass node-1 on later packets.
  'net.ipv4.conf.all.accept_redirects': 0,
  'net.ipv4.conf.default.accept_redirects': 0,
};

const NODE_SYSCTLS = {
  ...COMMON_SYSCTLS,
  'net.ipv4.ip_forward': 1,
  'net.ipv4.conf.all.send_redirects': 0,
  'net.ipv4.conf.default.send_redirects': 0,
};

const CLIENT_SYSCTLS = {
  ...COMMON_SYSCTLS,
  // Short-connection benchmarks run out of ephemeral ports with the default range.
  'net.ipv4.ip_local_port_range': '1024 65535',
};

/** The veth name on the node's side for pod number `index`. */
export function podVethName(podName: string, index: number): string {
  return ifName('v-', podName, index);
}

/** The veth name on the fabric's side for a node or client. */
export function fabricPortName(role: string, index: number): string {
  return ifName('f-', role, index);
}

async function createNamespace(ctx: BuildContext, role: string, sysctls: Record<string, string | number>): Promise<string> {
  ctx.checkAlive();
  const ns = ctx.ns(role);
  ctx.track(ns);
  await addNamespace(ns);
  await ipIn(ns, ['link', 'set', 'lo', 'up']);
  await sysctlIn(ns, sysctls);
  return ns;
}

/**
 * Creates everything the topology describes. Throws the first failing command's error
 * (ExecError, or LabError EDESTROYED from checkAlive); the caller removes what was tracked.
 */
export async function buildTopology(ctx: BuildContext): Promise<void> {
  const t = ctx.topology;
  const nodePrefix = parseCidr4(t.nodeNetwork)!.prefix;
  const log = ctx.logger;

  const fab = await createNamespace(ctx, FABRIC_ROLE, COMMON_SYSCTLS);
  await ipIn(fab, ['link', 'add', FABRIC_BRIDGE, 'type', 'bridge']);
  await ipIn(fab, ['link', 'set', FABRIC_BRIDGE, 'up']);

  const onNodeNetwork = [...t.nodes.map((n) => ({ role: n.name, ip: n.ip, sysctls: NODE_SYSCTLS })), ...t.clients.map((c) => ({ role: c.name, ip: c.ip, sysctls: CLIENT_SYSCTLS }))];
  for (const [i, h] of onNodeNetwork.entries()) {
    const ns = await createNamespace(ctx, h.role, h.sysctls);
    const port = fabricPortName(h.role, i);
    ctx.checkAlive();
    await ipIn(ns, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', port, 'netns', fab]);
    await ipIn(fab, ['link', 'set', port, 'master', FABRIC_BRIDGE]);
    await ipIn(fab, ['link', 'set', port, 'up']);
    await ipIn(ns, ['addr', 'add', `${h.ip}/${nodePrefix}`, 'dev', 'eth0']);
    await ipIn(ns, ['link', 'set', 'eth0', 'up']);
    log.debug('host on node network', { role: h.role, ns, ip: h.ip });
  }

  const nodes = new Map<string, NodeSpec>(t.nodes.map((n) => [n.name, n]));
  const podRanges = [t.clusterCIDR, t.serviceCIDR, t.nodeNetwork, t.externalCIDR];
  for (const [i, p] of t.pods.entries()) {
    const node = nodes.get(p.node)!;
    const nodeNs = ctx.ns(node.name);
    const gw = podGateway(node);
    const veth = podVethName(p.name, i);
    const ns = await createNamespace(ctx, p.name, COMMON_SYSCTLS);
    ctx.checkAlive();
    await ipIn(ns, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', veth, 'netns', nodeNs]);
    await ipIn(ns, ['addr', 'add', `${p.ip}/32`, 'dev', 'eth0']);
    await ipIn(ns, ['link', 'set', 'eth0', 'up']);
    // The gateway address sits on every pod veth of the node (/32, so it adds no subnet route).
    await ipIn(nodeNs, ['addr', 'add', `${gw}/32`, 'dev', veth]);
    await ipIn(nodeNs, ['link', 'set', veth, 'up']);
    // Node-originated traffic to a pod carries the node IP, as with host-routed CNIs.
    await ipIn(nodeNs, ['route', 'add', `${p.ip}/32`, 'dev', veth, 'src', node.ip]);
    await ipIn(ns, ['route', 'add', `${gw}/32`, 'dev', 'eth0', 'scope', 'link']);
    for (const r of podRanges) await ipIn(ns, ['route', 'add', r, 'via', gw, 'dev', 'eth0']);
    log.debug('pod', { pod: p.name, ns, ip: p.ip, node: node.name, veth });
  }

  for (const n of t.nodes) {
    ctx.checkAlive();
    const ns = ctx.ns(n.name);
    for (const other of t.nodes) {
      if (other !== n) await ipIn(ns, ['route', 'add', other.podCIDR, 'via', other.ip, 'dev', 'eth0']);
    }
    // A node-local connection to a VIP passes nat OUTPUT only after a route lookup succeeds.
    await ipIn(ns, ['route', 'add', t.serviceCIDR, 'dev', 'eth0', 'src', n.ip]);
    await ipIn(ns, ['route', 'add', t.externalCIDR, 'dev', 'eth0', 'src', n.ip]);
  }

  for (const r of t.routes) {
    ctx.checkAlive();
    await ipIn(ctx.ns(r.ns), ['route', 'replace', r.dst, 'via', r.via]);
  }
}

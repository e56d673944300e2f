// ServicePorts -> one iptables-restore transaction, laid out as kube-proxy's iptables proxier lays
// it out (pkg/proxy/iptables/proxier.go, syncProxyRules). Pure: no I/O, no clock.
//
// What each frontend does for each class of source (forward / REJECT / DROP, which endpoint set,
// masquerade) and which node addresses take NodePorts come from the model's frontend records
// (model/frontends.ts, model/nodeport-addresses.ts); this file only lays them out as chains.
// One IP family at a time: IPv4 ports for iptables-restore, IPv6 ports for ip6tables-restore.

import { parseCIDR } from '../../model/ip.js';
import { frontendRecords, portPaths, samePath } from '../../model/frontends.js';
import type { FrontendPath, PathVerdict } from '../../model/frontends.js';
import { nodePortSelection } from '../../model/nodeport-addresses.js';
import { externallyAccessible } from '../../model/types.js';
import type { ProxyConfig, ServicePort } from '../../model/types.js';
import {
  FILTER_TOP_CHAINS, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_MARK_MASQ, KUBE_NODEPORTS, KUBE_POSTROUTING,
  KUBE_PROXY_FIREWALL, KUBE_SERVICES, NAT_TOP_CHAINS, portChains,
} from './chains.js';
import type { JumpRule, PortChains } from './chains.js';
import { DiscardTransaction, Transaction, type TableName } from './transaction.js';

const DISCARD = new DiscardTransaction();
const NO_ADDRESSES: readonly string[] = Object.freeze([]);

/** Node-level inputs of the layout, derived once from ProxyConfig (see renderConfig). */
export interface RenderConfig {
  /** "0x4000" for bit 14; written as kube-proxy's test fixtures write it. */
  masqueradeMark: string;
  /** This family's pod CIDR that identifies pod traffic (kube-proxy's detect-local by cluster CIDR); "" disables it. */
  clusterCIDR: string;
  /** The loopback range, never a NodePort address (no route_localnet). */
  loopback: string;
  /** null: NodePorts on every local address (addrtype LOCAL); else only on these addresses. */
  nodePortIPs: readonly string[] | null;
  /** Drop ctstate INVALID in KUBE-FORWARD (kube-proxy does unless nf_conntrack_tcp_be_liberal is set). */
  dropInvalid: boolean;
  /** The node config the model's frontend records are decided with. */
  node: ProxyConfig;
}

/**
 * Derives one family's render settings from the node config. Never throws: problems come back as
 * warnings (e.g. several cluster CIDRs of a family, of which, like kube-proxy, only one is used).
 */
export function renderConfig(cfg: ProxyConfig, masqueradeBit = 14, family: 4 | 6 = 4): { config: RenderConfig; warnings: string[] } {
  const name = `IPv${family}`;
  const cidrsOfFamily = cfg.clusterCIDRs.filter((c) => parseCIDR(c)?.family === family);
  const nodePorts = nodePortSelection(cfg, family);
  const warnings: string[] = [];
  if (cidrsOfFamily.length > 1) warnings.push(`several ${name} clusterCIDRs (${cidrsOfFamily.join(', ')}): only ${cidrsOfFamily[0]} identifies pod traffic`);
  warnings.push(...nodePorts.warnings);
  return {
    config: {
      masqueradeMark: '0x' + (2 ** masqueradeBit).toString(16),
      clusterCIDR: cidrsOfFamily[0] ?? '',
      loopback: family === 4 ? '127.0.0.0/8' : '::1/128',
      nodePortIPs: nodePorts.matchAll ? null : nodePorts.addresses,
      dropInvalid: true,
      node: cfg,
    },
    warnings,
  };
}

/**
 * kube-proxy's probability string, fmt "%0.10f" of 1/n: correctly rounded, ties to even (Go's
 * strconv), where JavaScript's toFixed would round a tie up (n = 2048 is the one that matters).
 */
const probabilities: string[] = [];

export function probability(n: number): string {
  const known = probabilities[n];
  if (known !== undefined) return known;
  const s = formatProbability(n);
  if (n <= 10_000) probabilities[n] = s;
  return s;
}

function formatProbability(n: number): string {
  const x = 1 / n;
  const s = x.toFixed(10);
  const longer = x.toFixed(30);
  const isTie = longer[12] === '5' && /^0*$/.test(longer.slice(13));
  if (isTie && Number(s[s.length - 1]) % 2 === 1) return (x - 5e-11).toFixed(10);
  return s;
}

/** The rule specification of a jump rule, as kube-proxy writes it. */
export function jumpArgs(j: JumpRule): string[] {
  return [...j.extra, '-m', 'comment', '--comment', j.comment, '-j', j.to];
}

/** The dispatch rules from one policy chain (SVC or SVL) to its endpoints' SEP chains. */
function writeEndpointDispatch(tx: Transaction, sp: ServicePort, c: PortChains, chain: string, endpointIds: readonly string[]): void {
  if (sp.affinityTimeoutSeconds > 0) {
    for (const id of endpointIds) {
      const sep = c.sep(id);
      tx.append('nat', chain, '-m', 'comment', '--comment', `${c.name} -> ${id}`,
        '-m', 'recent', '--name', sep, '--rcheck', '--seconds', String(sp.affinityTimeoutSeconds), '--reap', '-j', sep);
    }
  }
  const n = endpointIds.length;
  endpointIds.forEach((id, i) => {
    const stat = i < n - 1 ? ['-m', 'statistic', '--mode', 'random', '--probability', probability(n - i)] : [];
    tx.append('nat', chain, '-m', 'comment', '--comment', `${c.name} -> ${id}`, ...stat, '-j', c.sep(id));
  });
}

/**
 * TCP is refused with a reset, everything else with ICMP port unreachable: the kernel
 * rate-limits the ICMP errors it sends per host, and a pod that just sent hairpin traffic
 * (answered with ICMP redirects) would lose its refusal and wait for a SYN retransmit.
 */
const REJECT_TCP = ['REJECT', '--reject-with', 'tcp-reset'];

/** The filter rule of a frontend whose path forwards nobody: REJECT without endpoints, DROP without local ones. */
function filterOf(verdict: PathVerdict, name: string, proto: string): { target: string[]; comment: string } {
  if (verdict !== 'reject') return { target: ['DROP'], comment: `${name} has no local endpoints` };
  return { target: proto === 'tcp' ? REJECT_TCP : ['REJECT'], comment: `${name} has no endpoints` };
}

/**
 * Renders one service port: its rules in the top-level chains into `tx`, its own chains
 * (SVC/SVL/EXT/FW/SEP) into `own` (a DiscardTransaction skips them). Returns the nat chains the
 * port owns either way.
 */
export function renderServicePort(tx: Transaction, own: Transaction, sp: ServicePort, cfg: RenderConfig): string[] {
  const c = portChains(sp);
  const { name, proto } = c;
  const byId = new Map(sp.endpoints.map((e) => [e.id, e]));
  const owned: string[] = [];
  const chainOf = (set: FrontendPath['set']): string => (set === 'local' ? c.svl : c.svc);

  // VIP records only: this layout matches NodePorts by port (KUBE-NODEPORTS), whatever the address.
  const records = frontendRecords(sp, cfg.node, NO_ADDRESSES);
  const { internal, external } = portPaths(sp, cfg.node);
  const externalPaths = externallyAccessible(sp) ? [external.fromPod, external.fromNode, external.fromExternal] : [];
  // A ClusterIP decides the same for every source but masquerade; so does an external frontend
  // for everyone but the eTP=Local short-circuits, which the EXT chain tells apart below.
  const inner = internal.fromPod;
  const outer = external.fromExternal;
  const hasInternal = inner.verdict === 'forward';
  const hasExternal = outer.verdict === 'forward';
  // eTP=Local without local endpoints still forwards pods and the node: their EXT chain stays.
  const usesExtChain = externalPaths.some((p) => p.verdict === 'forward');
  const lbRecords = records.filter((r) => r.kind === 'loadBalancerIP');
  const firewalled = lbRecords.find((r) => r.sourceRanges.length > 0);
  const lbChain = firewalled !== undefined ? c.fw : c.ext;
  const internalFilter = filterOf(inner.verdict, name, proto);
  const externalFilter = filterOf(outer.verdict, name, proto);
  const pp = ['-m', proto, '-p', proto];
  const port = String(sp.port);

  // ClusterIP.
  if (hasInternal) {
    tx.append('nat', KUBE_SERVICES, '-m', 'comment', '--comment', `${name} cluster IP`, ...pp, '-d', sp.clusterIP, '--dport', port, '-j', chainOf(inner.set));
  } else {
    tx.append('filter', KUBE_SERVICES, '-m', 'comment', '--comment', internalFilter.comment, ...pp, '-d', sp.clusterIP, '--dport', port, '-j', ...internalFilter.target);
  }
  // External IPs.
  for (const r of records) {
    if (r.kind !== 'externalIP') continue;
    if (usesExtChain) tx.append('nat', KUBE_SERVICES, '-m', 'comment', '--comment', `${name} external IP`, ...pp, '-d', r.ip, '--dport', port, '-j', c.ext);
    if (!hasExternal) tx.append('filter', KUBE_EXTERNAL_SERVICES, '-m', 'comment', '--comment', externalFilter.comment, ...pp, '-d', r.ip, '--dport', port, '-j', ...externalFilter.target);
  }
  // LoadBalancer ingress IPs.
  for (const r of lbRecords) {
    if (usesExtChain) tx.append('nat', KUBE_SERVICES, '-m', 'comment', '--comment', `${name} loadbalancer IP`, ...pp, '-d', r.ip, '--dport', port, '-j', lbChain);
    if (r.sourceRanges.length > 0) {
      tx.append('filter', KUBE_PROXY_FIREWALL, '-m', 'comment', '--comment', `${name} traffic not accepted by ${c.fw}`, ...pp, '-d', r.ip, '--dport', port, '-j', 'DROP');
    }
  }
  if (!hasExternal) {
    for (const r of lbRecords) {
      tx.append('filter', KUBE_EXTERNAL_SERVICES, '-m', 'comment', '--comment', externalFilter.comment, ...pp, '-d', r.ip, '--dport', port, '-j', ...externalFilter.target);
    }
  }
  // NodePort (not subject to loadBalancerSourceRanges, as in kube-proxy).
  if (sp.nodePort !== 0) {
    const np = String(sp.nodePort);
    if (usesExtChain) tx.append('nat', KUBE_NODEPORTS, '-m', 'comment', '--comment', name, ...pp, '--dport', np, '-j', c.ext);
    if (!hasExternal) {
      tx.append('filter', KUBE_EXTERNAL_SERVICES, '-m', 'comment', '--comment', externalFilter.comment, '-m', 'addrtype', '--dst-type', 'LOCAL', ...pp, '--dport', np, '-j', ...externalFilter.target);
    }
  }
  // Health check node port: accepted whether or not there are local endpoints.
  if (sp.healthCheckNodePort !== 0) {
    tx.append('filter', KUBE_NODEPORTS, '-m', 'comment', '--comment', `${name} health check node port`, '-m', 'tcp', '-p', 'tcp', '--dport', String(sp.healthCheckNodePort), '-j', 'ACCEPT');
  }

  if (hasInternal) {
    const match = ['-m', 'comment', '--comment', `${name} cluster IP`, ...pp, '-d', sp.clusterIP, '--dport', port];
    // Pods masqueraded too: every source is (masqueradeAll).
    if (inner.masquerade) own.append('nat', chainOf(inner.set), ...match, '-j', KUBE_MARK_MASQ);
    // Only what is not from a pod: off-cluster sources may have been routed here by another node.
    else if (internal.fromExternal.masquerade && cfg.clusterCIDR !== '') own.append('nat', chainOf(inner.set), ...match, '!', '-s', cfg.clusterCIDR, '-j', KUBE_MARK_MASQ);
  }

  if (usesExtChain) {
    own.chain('nat', c.ext);
    owned.push(c.ext);
    if (outer.masquerade) {
      // External sources are masqueraded (Cluster policy), and then so is every other source.
      own.append('nat', c.ext, '-m', 'comment', '--comment', `masquerade traffic for ${name} external destinations`, '-j', KUBE_MARK_MASQ);
    } else {
      const pod = external.fromPod;
      if (!samePath(pod, outer) && cfg.clusterCIDR !== '') {
        own.append('nat', c.ext, '-m', 'comment', '--comment', `pod traffic for ${name} external destinations`, '-s', cfg.clusterCIDR, '-j', chainOf(pod.set));
      }
      const node = external.fromNode;
      if (!samePath(node, outer)) {
        if (node.masquerade) own.append('nat', c.ext, '-m', 'comment', '--comment', `masquerade LOCAL traffic for ${name} external destinations`, '-m', 'addrtype', '--src-type', 'LOCAL', '-j', KUBE_MARK_MASQ);
        own.append('nat', c.ext, '-m', 'comment', '--comment', `route LOCAL traffic for ${name} external destinations`, '-m', 'addrtype', '--src-type', 'LOCAL', '-j', chainOf(node.set));
      }
    }
    if (hasExternal) own.append('nat', c.ext, '-j', chainOf(outer.set));
  }

  if (firewalled !== undefined) {
    own.chain('nat', c.fw);
    owned.push(c.fw);
    const head = ['-m', 'comment', '--comment', `${name} loadbalancer IP`];
    for (const cidr of firewalled.sourceRanges) own.append('nat', c.fw, ...head, '-s', cidr, '-j', c.ext);
    // A VIP-style LB address is often local to the node: node-originated requests then arrive
    // with the VIP as source and must be let through.
    if (firewalled.primaryNodeIPInRanges) for (const r of lbRecords) own.append('nat', c.fw, ...head, '-s', r.ip, '-j', c.ext);
    own.append('nat', c.fw, '-m', 'comment', '--comment', `other traffic to ${name} will be dropped by KUBE-PROXY-FIREWALL`);
  }

  // One policy chain per endpoint set some path forwards to.
  const sets = new Map<FrontendPath['set'], readonly string[]>();
  for (const p of [internal.fromPod, internal.fromNode, internal.fromExternal, ...externalPaths]) {
    if (p.verdict === 'forward' && p.endpoints.length > 0) sets.set(p.set, p.endpoints);
  }
  for (const set of ['cluster', 'local'] as const) {
    const ids = sets.get(set);
    if (ids === undefined) continue;
    const chain = chainOf(set);
    own.chain('nat', chain);
    owned.push(chain);
    writeEndpointDispatch(own, sp, c, chain, ids);
  }

  for (const id of sp.reachableEndpoints) {
    const ep = byId.get(id);
    const sep = c.sep(id);
    own.chain('nat', sep);
    owned.push(sep);
    const head = ['-m', 'comment', '--comment', name];
    // Hairpin: a pod reaching itself through the service must be masqueraded to get the reply.
    own.append('nat', sep, ...head, '-s', ep?.ip ?? id.slice(0, id.lastIndexOf(':')), '-j', KUBE_MARK_MASQ);
    const affinity = sp.affinityTimeoutSeconds > 0 ? ['-m', 'recent', '--name', sep, '--set'] : [];
    own.append('nat', sep, ...head, ...affinity, ...pp, '-j', 'DNAT', '--to-destination', id);
  }
  return owned;
}

/** The nat chains a port owns, without writing anything (used for chains of a port's previous version). */
export function ownedChains(sp: ServicePort, cfg: RenderConfig): string[] {
  return renderServicePort(DISCARD, DISCARD, sp, cfg);
}

/**
 * Only the ports' own chains: a staging transaction that nothing jumps to yet (see index.ts).
 * KUBE-MARK-MASQ, the one top-level chain they jump to, is rewritten with its constant rule in
 * the same transaction, so it exists on a fresh node and never stands empty.
 */
export function renderOwnChains(ports: Iterable<ServicePort>, cfg: RenderConfig): Transaction {
  const tx = new Transaction();
  tx.chain('nat', KUBE_MARK_MASQ);
  writeMarkMasq(tx, cfg);
  for (const sp of ports) renderServicePort(DISCARD, tx, sp, cfg);
  return tx;
}

function writeMarkMasq(tx: Transaction, cfg: RenderConfig): void {
  tx.append('nat', KUBE_MARK_MASQ, '-j', 'MARK', '--or-mark', cfg.masqueradeMark);
}

export interface RenderInput {
  /** Service ports of one family, in the order their rules should appear (Rudder sorts by id). */
  ports: Iterable<ServicePort>;
  /** Ids whose own chains are written; null writes every port's chains (full sync). Own chains
   * not written here must already exist (a partial sync, or chains staged beforehand). */
  write: ReadonlySet<string> | null;
  /** Per-service nat chains to flush and delete (no longer used). */
  staleChains?: Iterable<string>;
  /** Jump rules from built-in chains that are missing and must be inserted. */
  jumps?: Iterable<JumpRule>;
}

export interface Rendered {
  tx: Transaction;
  /** Nat chains owned by each rendered port id. */
  owned: Map<string, string[]>;
}

/** Renders one sync. Never throws; check `tx.error()` before running the transaction. */
export function render(input: RenderInput, cfg: RenderConfig): Rendered {
  const tx = new Transaction();
  for (const ch of NAT_TOP_CHAINS) tx.chain('nat', ch);
  for (const ch of FILTER_TOP_CHAINS) tx.chain('filter', ch);

  const mark = cfg.masqueradeMark;
  tx.append('nat', KUBE_POSTROUTING, '-m', 'mark', '!', '--mark', `${mark}/${mark}`, '-j', 'RETURN');
  // Clear the mark so a packet that re-traverses the stack is not masqueraded twice.
  tx.append('nat', KUBE_POSTROUTING, '-j', 'MARK', '--xor-mark', mark);
  tx.append('nat', KUBE_POSTROUTING, '-m', 'comment', '--comment', 'kubernetes service traffic requiring SNAT', '-j', 'MASQUERADE', '--random-fully');
  writeMarkMasq(tx, cfg);

  const owned = new Map<string, string[]>();
  const clusterIPs = new Set<string>();
  for (const sp of input.ports) {
    owned.set(sp.id, renderServicePort(tx, input.write === null || input.write.has(sp.id) ? tx : DISCARD, sp, cfg));
    clusterIPs.add(sp.clusterIP);
  }
  for (const ip of clusterIPs) for (const r of clusterIPRejectRules(ip)) tx.append('filter', KUBE_SERVICES, ...r);

  for (const chain of input.staleChains ?? []) tx.deleteChain('nat', chain);

  // The tail call to KUBE-NODEPORTS must stay the last rule of KUBE-SERVICES.
  const npComment = 'kubernetes service nodeports; NOTE: this must be the last rule in this chain';
  if (cfg.nodePortIPs === null) {
    tx.append('nat', KUBE_SERVICES, '-m', 'comment', '--comment', npComment, '-m', 'addrtype', '--dst-type', 'LOCAL', '!', '-d', cfg.loopback, '-j', KUBE_NODEPORTS);
  } else {
    for (const ip of cfg.nodePortIPs) tx.append('nat', KUBE_SERVICES, '-m', 'comment', '--comment', npComment, '-d', ip, '-j', KUBE_NODEPORTS);
  }

  if (cfg.dropInvalid) tx.append('filter', KUBE_FORWARD, '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'DROP');
  tx.append('filter', KUBE_FORWARD, '-m', 'comment', '--comment', 'kubernetes forwarding rules', '-m', 'mark', '--mark', `${mark}/${mark}`, '-j', 'ACCEPT');
  tx.append('filter', KUBE_FORWARD, '-m', 'comment', '--comment', 'kubernetes forwarding conntrack rule', '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT');

  for (const j of input.jumps ?? []) tx.insertFirst(j.table, j.from, ...jumpArgs(j));
  return { tx, owned };
}

/**
 * The filter rule for a ClusterIP: what reaches it was not DNATed by any service port, so it is
 * a port no service uses. It is rejected at once, as kube-proxy's nftables mode does, rather than
 * left to time out. These rules stay at the end of filter KUBE-SERVICES, after every port's own
 * REJECT/DROP rule.
 */
export function clusterIPRejectRules(ip: string): string[][] {
  const c = ['-m', 'comment', '--comment', 'reject traffic to unknown ports of ClusterIPs', '-d', ip];
  return [[...c, '-p', 'tcp', '-j', ...REJECT_TCP], [...c, '-j', 'REJECT']];
}

/** One rule a port contributes to a top-level chain. */
export interface TopLevelRule {
  table: TableName;
  chain: string;
  args: string[];
}

class RecordingTransaction extends DiscardTransaction {
  readonly recorded: TopLevelRule[] = [];
  override append(table: TableName, chain: string, ...args: readonly string[]): this {
    this.recorded.push({ table, chain, args: [...args] });
    return this;
  }
}

/** The rules a port contributes to the top-level chains (KUBE-SERVICES, KUBE-NODEPORTS, ...). */
export function topLevelRules(sp: ServicePort, cfg: RenderConfig): TopLevelRule[] {
  const rec = new RecordingTransaction();
  renderServicePort(rec, DISCARD, sp, cfg);
  return rec.recorded;
}

export function sameRules(a: readonly TopLevelRule[], b: readonly TopLevelRule[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x.table !== y.table || x.chain !== y.chain || x.args.length !== y.args.length || x.args.some((v, j) => v !== y.args[j])) return false;
  }
  return true;
}

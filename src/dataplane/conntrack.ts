// Stale UDP conntrack entries, cleared as kube-proxy clears them once a sync has been applied:
// UDP has no connection teardown, so an entry DNATed to an endpoint that left (or created while a
// service had no endpoint) keeps steering a client's packets until it times out.
//
// kube-proxy (pkg/proxy/conntrack), with its exact conntrack(8) arguments:
//   - an endpoint left a UDP service port: for each of the port's VIPs (clusterIP, externalIPs,
//     LB IPs) `-D --orig-dst <vip> --dst-nat <ep ip> -p udp`, and for its NodePort
//     `-D -p udp --dport <nodePort> --dst-nat <ep ip>`;
//   - a UDP service port got its first usable endpoint (or appeared with one): `-D --orig-dst <vip> -p udp`
//     for each VIP, `-D -p udp --dport <nodePort>`;
//   - a UDP service port was removed: its VIPs and NodePort, as above.
// The commands are computed purely (staleConntrackCommands); clearStaleConntrack runs them. Both
// netfilter data planes use this: the rules are kube-proxy's, whatever programs the kernel.

import type { Change, ServicePort } from '../model/types.js';
import type { Logger } from '../observe/log.js';
import { ExecError, type ExecFn } from '../util/exec.js';

/** conntrack's message when nothing matched; with it a non-zero exit is not an error. */
export const NO_FLOWS_DELETED = '0 flow entries have been deleted';

function isUdp(sp: ServicePort): boolean {
  return sp.protocol === 'UDP';
}

function vips(sp: ServicePort): string[] {
  return [sp.clusterIP, ...sp.externalIPs, ...sp.loadBalancerIPs];
}

function flushService(sp: ServicePort, out: string[][]): void {
  for (const vip of vips(sp)) out.push(['conntrack', '-D', '--orig-dst', vip, '-p', 'udp']);
  if (sp.nodePort > 0) out.push(['conntrack', '-D', '-p', 'udp', '--dport', String(sp.nodePort)]);
}

function flushEndpoint(sp: ServicePort, endpointIP: string, out: string[][]): void {
  if (sp.nodePort > 0) out.push(['conntrack', '-D', '-p', 'udp', '--dport', String(sp.nodePort), '--dst-nat', endpointIP]);
  for (const vip of vips(sp)) out.push(['conntrack', '-D', '--orig-dst', vip, '--dst-nat', endpointIP, '-p', 'udp']);
}

/** Endpoint id ("ip:port" or "[ip]:port") -> address, for one service port. */
function ipsOf(sp: ServicePort): Map<string, string> {
  return new Map(sp.endpoints.map((e) => [e.id, e.ip]));
}

/**
 * The conntrack invocations a set of changes calls for, deduplicated, in a stable order.
 * Changes of the other family are ignored; IPv6 commands carry "-f ipv6", as kube-proxy's do.
 * `initial`: the first sync after the agent started, whose "added" ports were (mostly) there
 * before it: they are left to reconcileUdpConntrack, which deletes only what is stale, instead
 * of flushing every flow of every UDP service on each restart.
 */
export function staleConntrackCommands(changes: readonly Change[], family: 4 | 6 = 4, initial = false): string[][] {
  const out: string[][] = [];
  for (const ch of changes) {
    if ((ch.kind === 'added' ? ch.next : ch.prev).family !== family) continue;
    switch (ch.kind) {
      case 'added':
        if (isUdp(ch.next) && ch.next.hasEndpoints && !initial) flushService(ch.next, out);
        break;
      case 'removed':
        if (isUdp(ch.prev)) flushService(ch.prev, out);
        break;
      case 'serviceChanged':
      case 'endpointsChanged': {
        const { prev, next } = ch;
        if (isUdp(next) && next.hasEndpoints && !prev.hasEndpoints) flushService(next, out);
        if (isUdp(prev)) {
          // Entries were created through the previous frontends, towards the previous endpoints.
          const still = new Set(next.protocol === prev.protocol ? next.reachableEndpoints : []);
          const gone = new Set<string>();
          const ips = ipsOf(prev);
          for (const id of prev.reachableEndpoints) if (!still.has(id)) gone.add(ips.get(id) ?? id.slice(0, id.lastIndexOf(':')));
          for (const ip of gone) flushEndpoint(prev, ip, out);
        }
        break;
      }
      default: {
        const never: never = ch;
        throw new TypeError(`unhandled change ${JSON.stringify(never)}`);
      }
    }
  }
  const seen = new Set<string>();
  if (family === 6) for (const argv of out) argv.splice(2, 0, '-f', 'ipv6');
  return out.filter((argv) => {
    const key = argv.join('\0');
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

const PARALLEL = 4;

/** One UDP entry of `conntrack -L`: the original tuple and where its replies come from. */
export interface UdpEntry {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** The reply direction's source: the backend when the flow was DNATed, else dst itself. */
  replySrc: string;
  replySport: number;
}

/** The UDP entries in `conntrack -L -p udp` output (the default text format); other lines are skipped. */
export function parseUdpEntries(text: string): UdpEntry[] {
  const out: UdpEntry[] = [];
  for (const line of text.split('\n')) {
    if (!/^\s*udp\s/.test(line)) continue;
    const src: string[] = [];
    const dst: string[] = [];
    const sport: number[] = [];
    const dport: number[] = [];
    for (const m of line.matchAll(/\b(src|dst|sport|dport)=(\S+)/g)) {
      if (m[1] === 'src') src.push(m[2]!);
      else if (m[1] === 'dst') dst.push(m[2]!);
      else (m[1] === 'sport' ? sport : dport).push(Number(m[2]));
    }
    if (src.length < 2 || dst.length < 2 || sport.length < 2 || dport.length < 2) continue;
    out.push({ src: src[0]!, dst: dst[0]!, sport: sport[0]!, dport: dport[0]!, replySrc: src[1]!, replySport: sport[1]! });
  }
  return out;
}

/**
 * The entries of `ports`' frontends (their VIPs on the service port, and their NodePorts) that do
 * not lead to one of the port's serving endpoints: DNATed to an endpoint that left, or not
 * DNATed at all (created while the service had none). Pure.
 */
export function staleUdpEntries(entries: readonly UdpEntry[], ports: readonly ServicePort[]): UdpEntry[] {
  const byVip = new Map<string, ServicePort>();
  const byNodePort = new Map<number, ServicePort>();
  for (const sp of ports) {
    if (!isUdp(sp)) continue;
    for (const vip of vips(sp)) byVip.set(`${vip}|${sp.port}`, sp);
    if (sp.nodePort > 0) byNodePort.set(sp.nodePort, sp);
  }
  const serving = new Map<ServicePort, Set<string>>();
  const servingOf = (sp: ServicePort): Set<string> => {
    let s = serving.get(sp);
    if (s === undefined) {
      const reachable = new Set(sp.reachableEndpoints);
      serving.set(sp, (s = new Set(sp.endpoints.filter((e) => reachable.has(e.id)).map((e) => `${e.ip}|${e.port}`))));
    }
    return s;
  };
  return entries.filter((e) => {
    const sp = byVip.get(`${e.dst}|${e.dport}`) ?? byNodePort.get(e.dport);
    return sp !== undefined && !servingOf(sp).has(`${e.replySrc}|${e.replySport}`);
  });
}

/**
 * After the first sync of an agent: deletes the UDP entries of `ports` that no serving endpoint
 * answers (as kube-proxy's conntrack reconciler does), and keeps every other flow where it is, so
 * a restart re-balances no live UDP flow. Best effort, as clearStaleConntrack. Returns false when
 * conntrack cannot run.
 */
export async function reconcileUdpConntrack(exec: ExecFn, logger: Logger, ports: readonly ServicePort[], family: 4 | 6 = 4): Promise<boolean> {
  const udp = ports.filter((sp) => isUdp(sp) && sp.family === family);
  if (udp.length === 0) return true;
  const fam = family === 6 ? ['-f', 'ipv6'] : [];
  let listed;
  try {
    listed = await exec(['conntrack', '-L', ...fam, '-p', 'udp'], { timeoutMs: 30_000 });
  } catch (e) {
    // Killed for a timeout: try again after the next sync. Not runnable: stop.
    logger.warn('conntrack -L did not finish: stale UDP entries may remain', { error: e as Error });
    return e instanceof ExecError && e.result !== null;
  }
  if (listed.code !== 0) {
    logger.warn('conntrack -L failed: stale UDP entries may remain', { code: listed.code, stderr: listed.stderr.trim() });
    return true;
  }
  const stale = staleUdpEntries(parseUdpEntries(listed.stdout), udp);
  if (stale.length === 0) return true;
  logger.info('deleting stale UDP conntrack entries', { entries: stale.length });
  const queue = stale.map((e) => ['conntrack', '-D', ...fam, '-p', 'udp', '--orig-src', e.src, '--orig-dst', e.dst, '--sport', String(e.sport), '--dport', String(e.dport)]);
  return runQueue(exec, logger, queue);
}

/**
 * Runs the conntrack commands for one family's changes, after their sync landed. Best effort:
 * failures are logged, never thrown. Returns false once conntrack cannot run at all (the caller
 * then stops trying).
 */
export async function clearStaleConntrack(exec: ExecFn, logger: Logger, changes: readonly Change[], family: 4 | 6 = 4, initial = false): Promise<boolean> {
  const queue = staleConntrackCommands(changes, family, initial);
  if (initial) {
    const added = changes.flatMap((c) => (c.kind === 'added' ? [c.next] : []));
    if (!(await reconcileUdpConntrack(exec, logger, added, family))) return false;
  }
  if (queue.length === 0) return true;
  logger.debug('clearing stale UDP conntrack entries', { commands: queue.length });
  return runQueue(exec, logger, queue);
}

/**
 * One family's stale-UDP conntrack cleanup across syncs: the first sync after a start reconciles
 * (it sees every port as added), later ones clear what their changes call for, and nothing runs
 * once conntrack turned out not to run at all.
 */
export class StaleConntrack {
  private started = false;
  private usable = true;

  constructor(private readonly exec: ExecFn, private readonly logger: Logger, private readonly family: 4 | 6) {}

  /** After a sync of `changes` landed. Never throws. */
  async clear(changes: readonly Change[]): Promise<void> {
    if (!this.usable) return;
    const initial = !this.started;
    this.started = true;
    this.usable = await clearStaleConntrack(this.exec, this.logger, changes, this.family, initial);
  }
}

/** Runs conntrack invocations, a few at a time. False once conntrack cannot run at all. */
async function runQueue(exec: ExecFn, logger: Logger, queue: string[][]): Promise<boolean> {
  let usable = true;
  const worker = async (): Promise<void> => {
    for (let argv = queue.shift(); argv !== undefined && usable; argv = queue.shift()) {
      try {
        const r = await exec(argv, { timeoutMs: 10_000 });
        if (r.code !== 0 && !(r.stdout + r.stderr).includes(NO_FLOWS_DELETED)) {
          logger.warn('conntrack failed: stale UDP entries may remain', { argv: argv.join(' '), code: r.code, stderr: r.stderr.trim() });
        }
      } catch (e) {
        // Killed for a timeout: this entry stays, the next ones may still work. Not runnable: stop.
        if (e instanceof ExecError && e.result !== null) {
          logger.warn('conntrack did not finish: stale UDP entries may remain', { argv: argv.join(' '), error: e });
          continue;
        }
        usable = false;
        logger.warn('conntrack cannot run: stale UDP entries will not be cleared', { error: e as Error });
      }
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  return usable;
}

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
 */
export function staleConntrackCommands(changes: readonly Change[], family: 4 | 6 = 4): string[][] {
  const out: string[][] = [];
  for (const ch of changes) {
    if ((ch.kind === 'added' ? ch.next : ch.prev).family !== family) continue;
    switch (ch.kind) {
      case 'added':
        if (isUdp(ch.next) && ch.next.hasEndpoints) flushService(ch.next, out);
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

/**
 * Runs the conntrack commands for one family's changes, after their sync landed. Best effort:
 * failures are logged, never thrown. Returns false once conntrack cannot run at all (the caller
 * then stops trying).
 */
export async function clearStaleConntrack(exec: ExecFn, logger: Logger, changes: readonly Change[], family: 4 | 6 = 4): Promise<boolean> {
  const queue = staleConntrackCommands(changes, family);
  if (queue.length === 0) return true;
  logger.debug('clearing stale UDP conntrack entries', { commands: queue.length });
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

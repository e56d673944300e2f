// Runs `rudder agent` inside lab nodes, as a DaemonSet would run one per node.

import { fileURLToPath } from 'node:url';
import type { Lab } from './lab.js';
import type { LabProcess } from './servers.js';
import { LabError } from './errors.js';

/** The CLI entry point, resolved from the compiled module's location. */
export const RUDDER_BIN = fileURLToPath(new URL('../../../bin/rudder.js', import.meta.url));

export interface AgentOptions {
  dataplane: string;
  manifests: string[];
  clusterCIDR: string;
  extraArgs?: string[];
  /** Wait this long for /healthz to answer 200. */
  readyTimeoutMs?: number;
  /**
   * Enter the node with `nsenter --net`, keeping the root mount namespace (/sys/fs/bpf and
   * cgroupfs visible). Default: true for the ebpf data plane, which needs both, false otherwise.
   */
  keepMounts?: boolean;
}

export interface LabAgent {
  node: string;
  proc: LabProcess;
  /** GETs a path on the agent's metrics address (inside the node), returning status and body. */
  get(path: string): Promise<{ status: number; body: string }>;
  stop(): Promise<void>;
}

const HEALTHZ = '127.0.0.1:10256';
const METRICS = '127.0.0.1:10249';

async function httpGet(lab: Lab, node: string, url: string): Promise<{ status: number; body: string }> {
  const r = await lab.exec(node, ['curl', '-s', '--max-time', '5', '-w', '\n%{http_code}', url]);
  const i = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(i + 1)) || 0, body: r.stdout.slice(0, i) };
}

/**
 * Starts an agent in `node`'s namespace and cgroup and waits until it reports healthy (first sync
 * done). An ebpf agent is told the node's cgroup, to attach its socket programs there and nowhere
 * else, and a per-run pin directory, which the lab removes. Throws LabError ESERVER if the agent
 * exits or is not healthy in time, ECGROUP for an ebpf agent in a lab without cgroups.
 */
export async function startAgent(lab: Lab, node: string, o: AgentOptions): Promise<LabAgent> {
  const ip = lab.ip(node);
  // Every agent gets the run's pin directory, not only ebpf ones: an agent of another plane removes
  // eBPF leftovers at start, and must look for them there, never in the machine's own pins.
  const ebpf = [...(o.dataplane === 'ebpf' ? ['--cgroup-root', lab.cgroup(node)] : []), '--bpf-pin-path', lab.bpfPinPath(node)];
  // setpriv --pdeathsig: the agent gets SIGTERM when the process that started it dies, however it
  // dies (a test runner killed by a closed pipe skips every exit handler).
  const argv = [
    'setpriv', '--pdeathsig', 'SIGTERM', '--',
    process.execPath, RUDDER_BIN, 'agent',
    '--dataplane', o.dataplane,
    '--node', node, '--node-ip', ip,
    '--cluster-cidr', o.clusterCIDR,
    '--healthz-bind-address', HEALTHZ, '--metrics-bind-address', METRICS,
    ...ebpf,
    ...o.manifests.flatMap((m) => ['-f', m]),
    ...(o.extraArgs ?? []),
  ];
  const proc = lab.spawn(node, argv, {
    label: `agent-${node}`,
    keepMounts: o.keepMounts ?? o.dataplane === 'ebpf',
    env: { ...process.env, RUDDER_LOG_LEVEL: process.env['RUDDER_LOG_LEVEL'] ?? 'info' },
  });
  const get = (path: string) => httpGet(lab, node, `http://${METRICS}${path}`);
  const deadline = Date.now() + (o.readyTimeoutMs ?? 15_000);
  for (;;) {
    if (!proc.running()) throw new LabError('ESERVER', `agent on ${node} exited: ${proc.output().slice(-10).join('\n')}`);
    const h = await httpGet(lab, node, `http://${HEALTHZ}/healthz`);
    if (h.status === 200) break;
    if (Date.now() > deadline) {
      await lab.stopProcess(proc);
      throw new LabError('ESERVER', `agent on ${node} not healthy after ${o.readyTimeoutMs ?? 15_000} ms: ${proc.output().slice(-10).join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { node, proc, get, stop: () => lab.stopProcess(proc, 5000) };
}

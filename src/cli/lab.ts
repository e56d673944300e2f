// `rudder lab`: bring the default lab topology up by hand, and remove labs left behind.

import { createLogger, type Logger } from '../observe/log.js';
import { Lab } from '../lab/lab.js';
import { LabError } from '../lab/errors.js';
import { findCgroup2Mount, listPinDirs, listRunCgroups } from '../lab/cgroup.js';
import { isRunId, LAB_PREFIX, listLabNamespaces } from '../lab/netns.js';
import { defaultTopology } from '../lab/topology.js';

const USAGE = `usage: rudder lab <command>

  up [--run <id>] [--no-servers]   create the default two-node lab, start the pod servers,
                                   print its namespaces and addresses, and keep it until Ctrl-C
  down --run <id>                  remove one run: its cgroups, namespaces (and their processes)
                                   and BPF pin directories
  clean                            remove every lab run (${LAB_PREFIX}* namespaces, cgroups and
                                   BPF pin directories) left by crashed runs
  list                             list lab namespaces, cgroups and pin directories by run
`;

function out(line = ''): void {
  process.stdout.write(line + '\n');
}

function flagValue(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

/** Runs `rudder lab ...`; resolves with the process exit code (0 ok, 1 failed, 2 usage). */
export async function labCommand(args: string[]): Promise<number> {
  const [cmd, ...rest] = args;
  if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE);
    return cmd === undefined ? 2 : 0;
  }
  if (!['up', 'down', 'clean', 'list'].includes(cmd)) {
    process.stderr.write(`rudder lab: unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
    return 2;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('rudder lab: needs root (it creates network namespaces)\n');
    return 1;
  }
  const logger = createLogger();
  try {
    switch (cmd) {
      case 'up': return await up(rest, logger);
      case 'down': return await down(rest, logger);
      case 'clean': return await clean(logger);
      default: return await list();
    }
  } catch (e) {
    const code = e instanceof LabError ? ` [${e.code}]` : '';
    process.stderr.write(`rudder lab ${cmd}: ${e instanceof Error ? e.message : String(e)}${code}\n`);
    return 1;
  }
}

async function up(args: string[], logger: Logger): Promise<number> {
  const runId = flagValue(args, '--run');
  if (args.includes('--run') && (runId === undefined || !isRunId(runId))) {
    process.stderr.write('rudder lab up: --run needs 4 hex digits\n');
    return 2;
  }
  // Listen before creating, so Ctrl-C during creation still ends in an orderly teardown.
  let stop: () => void = () => {};
  let interrupted = false;
  const stopped = new Promise<void>((resolve) => { stop = resolve; });
  const onSignal = (): void => { interrupted = true; stop(); };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    out('creating lab namespaces...');
    const lab = await Lab.create(defaultTopology(), { logger, handleSignals: false, ...(runId !== undefined ? { runId } : {}) });
    try {
      if (!interrupted && !args.includes('--no-servers')) {
        out('starting pod servers...');
        await lab.startServers();
      }
      if (!interrupted) {
        printLab(lab);
        out('lab is up; press Ctrl-C to tear it down');
        await stopped;
      }
    } finally {
      out(`\ntearing down lab ${lab.runId}...`);
      await lab.destroy();
      const left = await lab.listNamespaces();
      if (left.length > 0) out(`left behind: ${left.join(', ')} (run: rudder lab down --run ${lab.runId})`);
      else out(`lab ${lab.runId} removed`);
    }
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function printLab(lab: Lab): void {
  const roles = lab.roles();
  const w = (k: 'role' | 'ns' | 'ip', min: number): number => Math.max(min, ...roles.map((r) => r[k].length));
  const [wr, wn, wi] = [w('role', 4), w('ns', 9), w('ip', 2)];
  out(`\nlab ${lab.runId}`);
  out(`  ${'ROLE'.padEnd(wr)}  ${'KIND'.padEnd(6)}  ${'NAMESPACE'.padEnd(wn)}  ${'IP'.padEnd(wi)}  DETAIL`);
  for (const r of roles) out(`  ${r.role.padEnd(wr)}  ${r.kind.padEnd(6)}  ${r.ns.padEnd(wn)}  ${r.ip.padEnd(wi)}  ${r.detail}`);
  const t = lab.topology;
  out(`\n  ranges: nodes ${t.nodeNetwork}, pods ${t.clusterCIDR}, services ${t.serviceCIDR}, LB/external ${t.externalCIDR}`);
  const cgroups = roles.filter((r) => r.kind === 'node' && r.cgroup !== undefined).map((r) => `${r.role} ${r.cgroup}`);
  out(cgroups.length > 0 ? `  cgroups: ${cgroups.join(', ')} (pods run in their node's)` : '  cgroups: none (cgroup v2 is not mounted)');
  const pod = t.pods[0];
  const client = t.clients[0];
  if (pod !== undefined && client !== undefined) {
    out(`  try:    ip netns exec ${lab.ns(pod.node)} curl -s http://${pod.ip}:${pod.ports[0] ?? 8080}/`);
    out(`          ip netns exec ${lab.ns(client.name)} ip route`);
  }
  out();
}

async function down(args: string[], logger: Logger): Promise<number> {
  const runId = flagValue(args, '--run');
  if (runId === undefined || !isRunId(runId)) {
    process.stderr.write('rudder lab down: --run <id> (4 hex digits) is required; `rudder lab list` shows the runs\n');
    return 2;
  }
  out(`removing lab ${runId}...`);
  const removed = await Lab.cleanLeftovers({ runId, logger });
  for (const name of removed) out(`  removed ${name}`);
  const left = await leftovers(runId);
  if (left.length > 0) {
    out(`could not remove: ${left.join(', ')}`);
    return 1;
  }
  out(removed.length === 0 ? `nothing of run ${runId} found` : `lab ${runId} removed`);
  return 0;
}

/** Namespaces, cgroups and pin directories of lab runs (all, or one run's) that exist now. */
async function leftovers(runId?: string): Promise<string[]> {
  const mount = findCgroup2Mount();
  return [...(await listLabNamespaces(runId)), ...(mount === null ? [] : listRunCgroups(mount, runId)), ...listPinDirs(runId)];
}

async function clean(logger: Logger): Promise<number> {
  out(`removing every ${LAB_PREFIX}* namespace, cgroup and BPF pin directory...`);
  const removed = await Lab.cleanLeftovers({ logger });
  for (const name of removed) out(`  removed ${name}`);
  const left = await leftovers();
  if (left.length > 0) {
    out(`could not remove: ${left.join(', ')}`);
    return 1;
  }
  out(removed.length === 0 ? 'nothing to clean' : `removed ${removed.length} item(s)`);
  return 0;
}

async function list(): Promise<number> {
  const byRun = new Map<string, string[]>();
  for (const name of await leftovers()) {
    const base = name.slice(name.lastIndexOf('/') + 1);
    const id = base.slice(LAB_PREFIX.length, LAB_PREFIX.length + 4);
    byRun.set(id, [...(byRun.get(id) ?? []), name]);
  }
  if (byRun.size === 0) out('no lab runs');
  for (const [id, names] of byRun) out(`run ${id}: ${names.join(' ')}`);
  return 0;
}

// `rudder bench`: the traffic benchmark (bench/traffic.ts) from the command line. Root only: it
// builds a lab of network namespaces, and every request stays inside it. `--quick` is the smoke
// run of the test suite: every data plane once, small tables, short samples.

import { DATAPLANES } from '../dataplane/index.js';
import { MAX_SERVICES } from '../../bench/traffic-manifests.js';
import { renderReport, runTrafficBench, type TrafficBenchOptions } from '../../bench/traffic.js';
import { parseDuration } from './agent-config.js';
import { UsageError, flagBool, flagInt, flagOne, parseArgs, renderHelp, type FlagSpecs } from './args.js';

const FLAGS: FlagSpecs = {
  dataplanes: { value: 'NAME,...', list: true, help: `data planes to measure: ${DATAPLANES.join(', ')} (default iptables)` },
  duration: { value: 'DURATION', help: 'length of one wrk run, whole seconds (default 5s)' },
  connections: { value: 'N', help: 'concurrent connections, wrk -c (default 32)' },
  rounds: { value: 'N', help: 'interleaved rounds; medians are taken over them (default 3)' },
  services: { value: 'N,...', list: true, help: `services in the table, target included and last (default 1,1000; up to ${MAX_SERVICES.toLocaleString('en-US')})` },
  json: { boolean: true, help: 'print the results as JSON (progress still goes to stderr)' },
  quick: { boolean: true, help: `smoke run: 1 round, 2s, 1 and 100 services, every data plane (${DATAPLANES.join(', ')}; flags given explicitly win)` },
  help: { boolean: true, alias: 'h', help: 'show this help' },
};

const USAGE = 'Usage: rudder bench [--dataplanes iptables[,nftables,...]] [--duration 5s] [--connections 32] [--rounds 3] [--services 1,1000] [--json] [--quick]   (root)';

const THREADS = 2;

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Reads the flags into benchmark options. Throws UsageError naming the flag. */
export function benchOptions(argv: string[]): { options: Omit<TrafficBenchOptions, 'progress'>; json: boolean } | null {
  const p = parseArgs(argv, FLAGS);
  if (flagBool(p, 'help')) return null;
  if (p.positional.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(p.positional[0])}`);
  const quick = flagBool(p, 'quick');

  const dataplanes = [...new Set(p.flags.get('dataplanes') ?? (quick ? [...DATAPLANES] : ['iptables']))];
  for (const d of dataplanes) {
    if (!(DATAPLANES as readonly string[]).includes(d)) throw new UsageError(`--dataplanes: ${JSON.stringify(d)} is not one of ${DATAPLANES.join(', ')}`);
  }

  const durationText = flagOne(p, 'duration') ?? (quick ? '2s' : '5s');
  const ms = parseDuration(durationText);
  if (ms === null || ms < 1000 || ms > 600_000 || ms % 1000 !== 0) throw new UsageError(`--duration: ${JSON.stringify(durationText)} must be whole seconds from 1s to 10m`);

  const services = [...new Set((p.flags.get('services') ?? (quick ? ['1', '100'] : ['1', '1000'])).map((s) => {
    const n = /^\d+$/.test(s) ? Number(s) : NaN;
    if (!Number.isInteger(n) || n < 1 || n > MAX_SERVICES) throw new UsageError(`--services: ${JSON.stringify(s)} must be an integer from 1 to ${MAX_SERVICES}`);
    return n;
  }))].sort((a, b) => a - b);

  const connections = flagInt(p, 'connections', THREADS, 10_000) ?? 32;
  const rounds = flagInt(p, 'rounds', 1, 50) ?? (quick ? 1 : 3);
  return {
    options: {
      dataplanes, services, durationSec: ms / 1000, connections, threads: THREADS, rounds, preferNginx: true,
      command: ['rudder', 'bench', ...argv].map(shellQuote).join(' '),
    },
    json: flagBool(p, 'json'),
  };
}

export async function benchCommand(argv: string[]): Promise<number> {
  const parsed = benchOptions(argv);
  if (parsed === null) {
    process.stdout.write(renderHelp(USAGE, FLAGS));
    return 0;
  }
  if (process.getuid?.() !== 0) throw new UsageError('the benchmark builds network namespaces: run it as root');
  const result = await runTrafficBench({ ...parsed.options, progress: (line) => process.stderr.write(`${line}\n`) });
  process.stdout.write(parsed.json ? `${JSON.stringify(result, null, 1)}\n` : renderReport(result));
  return 0;
}

// The `rudder` command. User errors print one line and a documented exit code, never a stack.

import { EBPF_PIN_FLAG, ebpfOptions } from './ebpf-flags.js';
import { hostname } from 'node:os';
import { trace } from '../model/trace.js';
import { createLogger } from '../observe/log.js';
import { DecodeError } from '../source/decode.js';
import { ManifestError } from '../source/files.js';
import { UsageError, flagAll, flagBool, flagOne, parseArgs, renderHelp, type FlagSpecs } from './args.js';
import { PROXY_FLAGS, configFlags } from './config.js';
import { loadTable } from './load.js';
import { programmedServices, renderServiceRows, serviceRows } from './services.js';
import { TRACE_FLAGS, kernelDifferences, kernelText, localBackendsOf, packetFlags, traceAgent, traceJSON, traceText, type KernelAnswer } from './trace.js';
import { classifySource } from '../model/frontends.js';
import { DEFAULT_PIN_PATH } from '../dataplane/ebpf/defaults.js';
import { AGENT_FLAGS, agentSettings, runAgent } from './agent.js';
import { ConfigError } from './agent-config.js';
import { BUILT_DATAPLANES, createDataPlane } from '../dataplane/index.js';
import type { DataPlaneName } from '../dataplane/dataplane.js';
import { DEFAULT_PROXY_NAME } from '../model/types.js';
import { BindAddressError } from '../observe/server.js';

/** Exit codes, documented in the README. */
export const EXIT = {
  ok: 0,
  /** Runtime failure (kernel, network, unexpected). */
  failure: 1,
  /** Bad command line. */
  usage: 2,
  /** Bad input file (manifest, config). */
  input: 3,
  /** `trace --kernel`: the kernel and the model disagree. */
  differ: 4,
} as const;

const HELP_FLAG: FlagSpecs = { help: { boolean: true, alias: 'h', help: 'show this help' } };

const USAGE = `rudder: a Kubernetes Service proxy (kube-proxy replacement)

Usage: rudder <command> [flags]

Commands:
  agent      program this network namespace's kernel from Services and EndpointSlices
  services   list every service frontend with its backends (from manifests, or a running agent)
  trace      tell where a packet to a service goes, and why
  cleanup    remove everything a data plane created
  demo       run a two-node lab with real traffic through every kind of frontend (root)
  bench      measure short-connection throughput and latency through each data plane in a lab (root)
  lab        build or remove lab network namespaces: lab up | down --run ID | clean | list
  version    print the version

Run 'rudder <command> --help' for a command's flags.
Exit codes: 0 ok, 1 runtime failure, 2 bad command line, 3 bad input file.`;

type Command = (argv: string[]) => Promise<number>;

function out(s: string): void {
  process.stdout.write(s);
}

const commands: Record<string, Command> = {
  async agent(argv) {
    const specs = { ...AGENT_FLAGS, ...HELP_FLAG };
    const p = parseArgs(argv, specs);
    if (flagBool(p, 'help')) return out(renderHelp('Usage: rudder agent (-f MANIFESTS | --kubeconfig PATH | --in-cluster) [flags]', specs)), EXIT.ok;
    return runAgent(agentSettings(p));
  },

  async cleanup(argv) {
    const specs: FlagSpecs = { dataplane: { value: 'NAME', help: `data plane to remove: ${BUILT_DATAPLANES.join(', ')} (default: every one, as kube-proxy --cleanup)` }, ...EBPF_PIN_FLAG, ...HELP_FLAG };
    const p = parseArgs(argv, specs);
    if (flagBool(p, 'help')) return out(renderHelp('Usage: rudder cleanup [--dataplane NAME] [--bpf-pin-path DIR]', specs)), EXIT.ok;
    const name = flagOne(p, 'dataplane');
    if (name !== undefined && !(BUILT_DATAPLANES as readonly string[]).includes(name)) throw new UsageError(`--dataplane: ${JSON.stringify(name)} is not one of ${BUILT_DATAPLANES.join(', ')}`);
    const logger = createLogger();
    const noConfig = { nodeName: hostname(), nodeIPs: [], zone: '', clusterCIDRs: [], nodePortAddresses: [], masqueradeAll: false, proxyName: DEFAULT_PROXY_NAME };
    const deps = { config: () => noConfig, logger, ebpf: ebpfOptions(p) };
    if (name !== undefined) {
      await (await createDataPlane(name as DataPlaneName, deps)).cleanup();
    } else {
      // Every plane whose tools exist here; a plane that cannot even start has nothing to remove.
      for (const n of BUILT_DATAPLANES) {
        try {
          await (await createDataPlane(n, deps)).cleanup();
        } catch (e) {
          // Its tool is not installed: then it cannot have left anything either.
          if (!/cannot run|does not run|ENOENT/.test((e as Error).message)) throw e;
          logger.info('nothing to remove', { dataplane: n, reason: (e as Error).message });
        }
      }
    }
    logger.info('cleaned up', { dataplane: name ?? BUILT_DATAPLANES.join(',') });
    return EXIT.ok;
  },

  async bench(argv) {
    const { benchCommand } = await import('./bench.js');
    return benchCommand(argv);
  },

  async demo(argv) {
    const { demoCommand } = await import('./demo.js');
    return demoCommand(argv);
  },

  async lab(argv) {
    const { labCommand } = await import('./lab.js');
    return labCommand(argv);
  },

  async services(argv) {
    const specs = { ...PROXY_FLAGS, json: { boolean: true, help: 'print JSON' }, agent: { value: 'HOST:PORT', help: 'read back what a running agent programmed (its metrics address)' }, ...HELP_FLAG };
    const p = parseArgs(argv, specs);
    if (flagBool(p, 'help')) return out(renderHelp('Usage: rudder services (-f MANIFESTS | --agent HOST:PORT) [flags]', specs)), EXIT.ok;
    const agent = flagOne(p, 'agent');
    if (agent !== undefined) return programmedServices(agent, flagBool(p, 'json'));
    const files = [...flagAll(p, 'file'), ...p.positional];
    if (files.length === 0) throw new UsageError('services needs manifests (-f PATH) or a running agent (--agent 127.0.0.1:10249)');
    const { table, config } = loadTable(files, configFlags(p, hostname()), createLogger());
    const rows = serviceRows(table, config);
    out(flagBool(p, 'json') ? JSON.stringify(rows, null, 1) + '\n' : renderServiceRows(rows));
    return EXIT.ok;
  },

  async trace(argv) {
    const specs = { ...PROXY_FLAGS, ...TRACE_FLAGS, ...HELP_FLAG };
    const p = parseArgs(argv, specs);
    if (flagBool(p, 'help')) return out(renderHelp('Usage: rudder trace (-f MANIFESTS | --agent HOST:PORT) --src IP --dst IP --port N [--proto tcp|udp|sctp] [--kernel] [flags]', specs)), EXIT.ok;
    const files = [...flagAll(p, 'file'), ...p.positional];
    const agent = flagOne(p, 'agent');
    if (files.length === 0 && agent === undefined) throw new UsageError('trace needs manifests (-f PATH) or a running agent (--agent 127.0.0.1:10249)');
    if (files.length > 0 && agent !== undefined) throw new UsageError('give either manifests (-f) or --agent, not both');
    const pkt = packetFlags(p);
    const kernel = flagBool(p, 'kernel');
    if (kernel && pkt.protocol === 'SCTP') throw new UsageError('--kernel traces TCP and UDP (the per-packet programs do not translate SCTP)');
    let r;
    let k: { answer: KernelAnswer; diffs: string[] | null } | undefined;
    if (agent !== undefined) {
      const a = await traceAgent(agent, pkt, kernel);
      r = a;
      if (kernel && a.kernel !== undefined) k = { answer: a.kernel, diffs: a.kernelDifferences ?? null };
    } else {
      const { table, config } = loadTable(files, configFlags(p, hostname()), createLogger());
      r = trace(table, config, pkt);
      if (kernel) {
        const { KernelTracer } = await import('../dataplane/ebpf/kernel-trace.js');
        const tracer = new KernelTracer(flagOne(p, 'bpf-pin-path') ?? DEFAULT_PIN_PATH, { hostNetnsCookie: 0n, hostNamespaceOnly: false, maglevTableSize: 0 });
        try {
          const answer = tracer.trace(pkt);
          k = { answer, diffs: classifySource(pkt.src, config) === 'fromExternal' ? kernelDifferences(r, answer, localBackendsOf(table, r.service)) : null };
        } finally {
          tracer.close();
        }
      }
    }
    if (flagBool(p, 'json')) out(k === undefined ? traceJSON(r) : JSON.stringify({ ...JSON.parse(traceJSON(r)), kernel: k.answer, kernelDifferences: k.diffs }, null, 1) + '\n');
    else out(traceText(pkt, r) + (k === undefined ? '' : kernelText(k.answer, k.diffs)));
    return k !== undefined && k.diffs !== null && k.diffs.length > 0 ? EXIT.differ : EXIT.ok;
  },

  async version() {
    out('rudder 0.1.0\n');
    return EXIT.ok;
  },
};

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    out(USAGE + '\n');
    return cmd === undefined ? EXIT.usage : EXIT.ok;
  }
  const run = commands[cmd];
  if (run === undefined) {
    process.stderr.write(`rudder: unknown command ${JSON.stringify(cmd)}\n${USAGE}\n`);
    return EXIT.usage;
  }
  try {
    return await run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`rudder ${cmd}: ${e.message}\n`);
      return EXIT.usage;
    }
    if (e instanceof ManifestError || e instanceof DecodeError || e instanceof ConfigError || e instanceof BindAddressError) {
      process.stderr.write(`rudder ${cmd}: ${e.message}\n`);
      return EXIT.input;
    }
    const err = e as Error & { code?: string };
    process.stderr.write(`rudder ${cmd}: ${err.message}${err.code ? ` (${err.code})` : ''}\n`);
    if (process.env['RUDDER_DEBUG']) process.stderr.write(`${err.stack}\n`);
    return EXIT.failure;
  }
}

// A scratch setup for the eBPF data plane's real-kernel tests: one network namespace (the "pod"
// side: backends on lo, clients) and one lab-style cgroup `<cgroup2>/rd-<run>/node` that clients
// run in, so the socket programs attached there translate only the test's own connections. Pins
// go to /sys/fs/bpf/rd-<run>-node. Everything carries the lab's run prefix, so `rudder lab clean`
// removes what a killed test left.

import { spawn, type ChildProcess } from 'node:child_process';
import { execOk, exec, type ExecResult } from '../../src/util/exec.js';
import { findCgroup2Mount, inCgroupArgv, RunCgroups, BPF_FS } from '../../src/lab/cgroup.js';
import { NETNS_RUN_DIR, newRunId, nsName } from '../../src/lab/netns.js';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export interface EbpfScratch {
  ns: string;
  cgroup: string;
  pinPath: string;
  /** Runs a node script inside the namespace and the cgroup. */
  node(script: string, timeoutMs?: number): Promise<ExecResult>;
  /** Starts a long-running node script there; resolves once it prints a line. */
  serve(script: string): Promise<ChildProcess>;
  remove(): Promise<void>;
}

/** Creates the namespace with `addrs` on lo (no other interface, no route) and the cgroup. */
export async function createEbpfScratch(addrs: readonly string[]): Promise<EbpfScratch> {
  const mount = findCgroup2Mount();
  if (mount === null) throw new Error('no cgroup2 mount');
  // A run id nobody uses: RunCgroups.create refuses an existing parent, so retry on a clash.
  let run = '';
  let cgs: RunCgroups | undefined;
  for (let i = 0; cgs === undefined; i++) {
    run = newRunId();
    const c = new RunCgroups(mount, run);
    if (c.exists() || existsSync(join(NETNS_RUN_DIR, nsName(run, 'ebpf')))) continue;
    try {
      c.create(['node']);
      cgs = c;
    } catch (e) {
      if (i >= 20) throw e;
    }
  }
  const ns = nsName(run, 'ebpf');
  const pinPath = join(BPF_FS, `rd-${run}-node`);
  const procs: ChildProcess[] = [];
  try {
    await execOk(['ip', 'netns', 'add', ns]);
    await execOk(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    for (const a of addrs) await execOk(['ip', '-n', ns, 'addr', 'add', a.includes(':') ? `${a}/128` : `${a}/32`, 'dev', 'lo', ...(a.includes(':') ? ['nodad'] : [])]);
  } catch (e) {
    await exec(['ip', 'netns', 'del', ns]);
    await cgs.remove();
    throw e;
  }
  const runCgroups = cgs;
  const cgroup = cgs.node('node');
  const argv = (script: string): string[] => inCgroupArgv(cgroup, ['ip', 'netns', 'exec', ns, process.execPath, '-e', script]);
  return {
    ns, cgroup, pinPath,
    node: (script, timeoutMs = 10_000) => exec(argv(script), { timeoutMs }),
    serve: async (script) => {
      const [cmd, ...rest] = argv(script);
      const p = spawn(cmd!, rest, { stdio: ['ignore', 'pipe', 'inherit'] });
      procs.push(p);
      await new Promise<void>((resolve, reject) => {
        p.stdout!.once('data', () => resolve());
        p.once('exit', (code) => reject(new Error(`server exited (${code})`)));
      });
      return p;
    },
    remove: async () => {
      for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
      await exec(['ip', 'netns', 'del', ns]);
      await runCgroups.remove();
      rmSync(pinPath, { recursive: true, force: true });
    },
  };
}

/** A TCP server answering every connection with `reply` and closing. */
export const tcpServer = (host: string, port: number, reply: string): string =>
  `require('net').createServer((c) => c.end(${JSON.stringify(reply)})).listen(${port}, ${JSON.stringify(host)}, () => console.log('ready'))`;

/** A UDP echo server that prefixes its name. */
export const udpServer = (host: string, port: number, name: string): string =>
  `const s = require('dgram').createSocket(${JSON.stringify(host.includes(':') ? 'udp6' : 'udp4')}); s.on('message', (m, r) => s.send(${JSON.stringify(name + ':')} + m, r.port, r.address)); s.bind(${port}, ${JSON.stringify(host)}, () => console.log('ready'))`;

/**
 * Connects `count` times to host:port; prints one JSON line: what each connection read (or its
 * error code and how long the failure took) and the peer address getpeername() reported.
 */
export const tcpClients = (host: string, port: number, count = 1): string => `
const net = require('net'); const out = [];
const one = () => new Promise((res) => { const t0 = Date.now(); const c = net.connect(${port}, ${JSON.stringify(host)}); let data = ''; let peer = '';
  c.on('connect', () => { peer = c.remoteAddress + ':' + c.remotePort; });
  c.on('data', (d) => { data += d; }); c.on('end', () => res({ data, peer }));
  c.on('error', (e) => res({ error: e.code, ms: Date.now() - t0 })); setTimeout(() => { c.destroy(); res({ error: 'TIMEOUT' }); }, 2000); });
(async () => { for (let i = 0; i < ${count}; i++) out.push(await one()); console.log(JSON.stringify(out)); })();`;

/** Sends one datagram with sendto (unconnected) and prints the reply and its source address. */
export const udpRequest = (host: string, port: number, payload: string): string => `
const s = require('dgram').createSocket(${JSON.stringify(host.includes(':') ? 'udp6' : 'udp4')});
s.on('message', (m, r) => { console.log(JSON.stringify({ reply: String(m), from: r.address + ':' + r.port })); process.exit(0); });
s.on('error', (e) => { console.log(JSON.stringify({ error: e.code })); process.exit(0); });
s.send(${JSON.stringify(payload)}, ${port}, ${JSON.stringify(host)}, (e) => { if (e) { console.log(JSON.stringify({ error: e.code })); process.exit(0); } });
setTimeout(() => { console.log(JSON.stringify({ error: 'TIMEOUT' })); process.exit(0); }, 2000);`;

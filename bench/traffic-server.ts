// The HTTP server the traffic benchmark measures against, in one lab pod: a minimal nginx when
// it is installed (one worker, a 3-byte static answer, keepalive off, no access log), otherwise
// the lab's own Node.js pod server, which is several times slower per request and so hides
// part of the data plane's cost.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Lab, LabProcess } from '../src/lab/index.js';
import { findProgram } from '../src/lab/probes.js';

export interface BenchServer {
  /** "nginx 1.22.1 (1 worker)" or "rudder lab pod server (Node.js)". */
  kind: string;
  pod: string;
  port: number;
  stop(): Promise<void>;
}

/** The nginx configuration: everything under `dir`, nothing written elsewhere. */
export function nginxConfig(dir: string, port: number): string {
  return `# rudder bench: minimal static server, one short connection per request
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_timeout 0;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen ${port} backlog=4096;
    location / { default_type text/plain; return 200 "ok\\n"; }
  }
}
`;
}

async function nginxVersion(lab: Lab, pod: string): Promise<string> {
  const r = await lab.exec(pod, ['nginx', '-v']);
  return /nginx\/(\S+)/.exec(r.stderr + r.stdout)?.[1] ?? '?';
}

/** Polls the server from `from` until it answers 200. Throws Error with the server's output. */
async function waitReady(lab: Lab, from: string, url: string, proc: LabProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await lab.exec(from, ['curl', '-s', '-o', '/dev/null', '--max-time', '1', '-w', '%{http_code}', url]);
    if (r.stdout.trim() === '200') return;
    if (!proc.running() || Date.now() > deadline) {
      throw new Error(`bench server in ${proc.ns} did not answer ${url} (${proc.running() ? 'timeout' : 'exited'}): ${proc.output().slice(-5).join(' | ') || 'no output'}`);
    }
    await new Promise((res) => setTimeout(res, 100));
  }
}

/**
 * Starts the server in `pod` on `port` and waits until `probeFrom` gets a 200 from it.
 * `preferNginx: false` forces the lab pod server. Throws Error if the server does not come up.
 */
export async function startBenchServer(lab: Lab, o: { pod: string; port: number; probeFrom: string; workDir: string; preferNginx: boolean }): Promise<BenchServer> {
  const url = `http://${lab.ip(o.pod)}:${o.port}/`;
  if (o.preferNginx && findProgram('nginx') !== null) {
    const dir = join(o.workDir, 'nginx');
    mkdirSync(dir, { recursive: true });
    const conf = join(dir, 'nginx.conf');
    writeFileSync(conf, nginxConfig(dir, o.port));
    // -e: the error log before the configuration is read (the default path may not be writable).
    const proc = lab.spawn(o.pod, ['nginx', '-e', 'stderr', '-p', dir, '-c', conf], { label: `nginx/${o.pod}` });
    await waitReady(lab, o.probeFrom, url, proc, 5000);
    return { kind: `nginx ${await nginxVersion(lab, o.pod)} (1 worker, keepalive off)`, pod: o.pod, port: o.port, stop: () => lab.stopProcess(proc) };
  }
  const spec = lab.pod(o.pod);
  if (!spec.ports.includes(o.port)) throw new Error(`pod ${o.pod} serves ${spec.ports.join(',')}, not ${o.port}`);
  await lab.startServers([o.pod]);
  return { kind: 'rudder lab pod server (Node.js; nginx not installed)', pod: o.pod, port: o.port, stop: () => lab.stopServers([o.pod]) };
}

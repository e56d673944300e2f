// A tiny TCP server and client inside a scratch network namespace, for the data planes'
// real-kernel tests: the server answers every connection with a fixed word, the client prints
// what it received (or the error code on stderr).

import { spawn, type ChildProcess } from 'node:child_process';
import { exec, execOk, type ExecResult } from '../../src/util/exec.js';

/** Starts a server on host:port in `ns` and resolves once it listens. Kill it when done. */
export async function startTcpServer(ns: string, host: string, port: number, reply: string): Promise<ChildProcess> {
  const server = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e',
    `require('net').createServer((c) => c.end(${JSON.stringify(reply)})).listen(${port}, ${JSON.stringify(host)}, () => console.log('ready'))`],
  { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    server.stdout!.once('data', () => resolve());
    server.once('exit', (code) => reject(new Error(`server exited (${code})`)));
  });
  return server;
}

/** Connects from `ns`: stdout is what the server sent, stderr the error code if the connection failed. */
export function tcpConnect(ns: string, host: string, port: number): Promise<ExecResult> {
  return exec(['ip', 'netns', 'exec', ns, process.execPath, '-e',
    `const c = require('net').connect(${port}, ${JSON.stringify(host)}); c.on('data', (d) => process.stdout.write(d));`
    + " c.on('error', (e) => { console.error(e.code ?? e.message); process.exit(1); }); setTimeout(() => process.exit(2), 3000).unref();"],
  { timeoutMs: 10_000 });
}

/**
 * A loopback-only namespace for IPv6 data plane tests: the endpoint fd00:180::1 lives on lo and the
 * service range fd00:30::/64 routes to lo, so local connections traverse the output path. No other
 * interface, no default route.
 */
export async function createIPv6Scratch(ns: string): Promise<void> {
  await execOk(['ip', 'netns', 'add', ns]);
  await execOk(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  await execOk(['ip', '-n', ns, '-6', 'addr', 'add', 'fd00:180::1/128', 'dev', 'lo', 'nodad']);
  await execOk(['ip', '-n', ns, '-6', 'route', 'add', 'fd00:30::/64', 'dev', 'lo']);
}

/** Kills the test's server (if any) and deletes the namespace; never throws. */
export async function removeScratch(ns: string, server: ChildProcess | undefined): Promise<void> {
  if (server !== undefined && server.exitCode === null) server.kill('SIGKILL');
  await exec(['ip', 'netns', 'del', ns]);
}

// A tiny TCP server and client inside a scratch network namespace, for the data planes'
// real-kernel tests: the server answers every connection with a fixed word, the client prints
// what it received (or the error code on stderr).

import { spawn, type ChildProcess } from 'node:child_process';
import { exec, type ExecResult } from '../../src/util/exec.js';

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

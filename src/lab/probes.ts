// Probes the lab runs from inside a namespace: HTTP with curl, one UDP round trip with a small
// node script, reachability with ping (or a TCP probe where ping is not installed). The argv
// builders and output parsers are pure, so they can be unit-tested without a kernel.

import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { ExecResult } from '../util/exec.js';
import { UDPCLIENT_SCRIPT } from './servers.js';

/** What a pod server answers (HTTP: no payload; UDP: payload echoed). */
export interface PodReply {
  pod: string;
  /** The peer address the server saw. */
  client: string;
  clientPort: number;
  /** The server's local port that took the request. */
  port: number;
  payload?: string;
}

/**
 * Why a probe failed: refused (RST / ICMP port unreachable), unreachable (no route, ICMP
 * unreachable), timeout (nothing came back), reset (connection dropped after it was accepted),
 * http (an HTTP error status), bad-reply (an answer that is not a pod server's), error (other).
 */
export type ProbeFailureKind = 'refused' | 'unreachable' | 'timeout' | 'reset' | 'http' | 'bad-reply' | 'error';

export type ProbeResult =
  | { ok: true; reply: PodReply; status?: number }
  | { ok: false; kind: ProbeFailureKind; message: string; status?: number };

export interface CurlOptions {
  /** Whole-request limit; the connect limit is the same. Default 2000 ms. */
  timeoutMs?: number;
  /** Bind the client socket to this source port (curl --local-port). */
  localPort?: number;
  /** Bind the client socket to this source address (curl --interface). */
  sourceIp?: string;
}

const STATUS_MARK = '\n@@rudder-status:';

export function curlArgv(url: string, opts: CurlOptions = {}): string[] {
  const secs = ((opts.timeoutMs ?? 2000) / 1000).toFixed(3);
  const argv = ['curl', '-sS', '-v', '--noproxy', '*', '--connect-timeout', secs, '--max-time', secs, '-w', `${STATUS_MARK}%{http_code}`];
  if (opts.localPort !== undefined) argv.push('--local-port', String(opts.localPort));
  if (opts.sourceIp !== undefined) argv.push('--interface', opts.sourceIp);
  argv.push(url);
  return argv;
}

/** Reads a pod reply out of a JSON text; null if it is not one. */
export function parsePodReply(text: string): PodReply | null {
  try {
    const v = JSON.parse(text) as Partial<PodReply> | null;
    if (v === null || typeof v !== 'object' || typeof v.pod !== 'string' || typeof v.client !== 'string' || typeof v.port !== 'number') return null;
    return v as PodReply;
  } catch {
    return null;
  }
}

/** Classifies a curl run (argv from curlArgv). */
export function parseCurlResult(r: ExecResult): ProbeResult {
  const markAt = r.stdout.lastIndexOf(STATUS_MARK);
  const body = markAt >= 0 ? r.stdout.slice(0, markAt) : r.stdout;
  const status = markAt >= 0 ? Number(r.stdout.slice(markAt + STATUS_MARK.length)) : 0;
  const errLines = r.stderr.trim().split('\n');
  // curl's own last line says "Couldn't connect to server"; -v's "connect to ... failed: <strerror>" says why.
  const why = errLines.filter((l) => /connect to .* failed:|Immediate connect fail/.test(l)).pop()?.replace(/^\* /, '');
  const lastLine = why ?? errLines.filter((l) => l.startsWith('curl:')).pop() ?? errLines.pop() ?? '';
  if (r.code === 0) {
    if (status >= 400) return { ok: false, kind: 'http', message: `HTTP ${status}`, status };
    const reply = parsePodReply(body);
    return reply === null ? { ok: false, kind: 'bad-reply', message: `not a pod reply: ${body.slice(0, 200)}`, status } : { ok: true, reply, status };
  }
  const err = r.stderr;
  if (r.code === 28) return { ok: false, kind: 'timeout', message: lastLine };
  if (r.code === 7) {
    if (/Connection refused/i.test(err)) return { ok: false, kind: 'refused', message: lastLine };
    if (/Network is unreachable|No route to host|Host is unreachable/i.test(err)) return { ok: false, kind: 'unreachable', message: lastLine };
  }
  if (r.code === 52 || r.code === 56 || /Connection reset/i.test(err)) return { ok: false, kind: 'reset', message: lastLine };
  return { ok: false, kind: 'error', message: `curl exit ${r.code}: ${lastLine}` };
}

export interface UdpOptions {
  /** Default 2000 ms. */
  timeoutMs?: number;
  /** Send from this source port (to reuse one conntrack tuple across calls). */
  localPort?: number;
}

export function udpArgv(ip: string, port: number, payload: string, opts: UdpOptions = {}): string[] {
  const argv = [process.execPath, UDPCLIENT_SCRIPT, '--host', ip, '--port', String(port), '--payload', payload, '--timeout-ms', String(opts.timeoutMs ?? 2000)];
  if (opts.localPort !== undefined) argv.push('--local-port', String(opts.localPort));
  return argv;
}

/** Classifies a udpclient run (argv from udpArgv). */
export function parseUdpResult(r: ExecResult): ProbeResult {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let v: { ok?: boolean; reply?: string; kind?: ProbeFailureKind; message?: string };
  try {
    v = JSON.parse(line) as typeof v;
  } catch {
    return { ok: false, kind: 'error', message: `udp client exit ${r.code}: ${r.stderr.trim() || line}` };
  }
  if (v.ok === true) {
    const reply = parsePodReply(v.reply ?? '');
    return reply === null ? { ok: false, kind: 'bad-reply', message: `not a pod reply: ${(v.reply ?? '').slice(0, 200)}` } : { ok: true, reply };
  }
  return { ok: false, kind: v.kind ?? 'error', message: v.message ?? 'udp client failed' };
}

/** Absolute path of a program on PATH, or null. */
export function findProgram(name: string): string | null {
  for (const dir of (process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)) {
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

export interface PingResult {
  reachable: boolean;
  /** icmp: an echo reply came back; tcp: a TCP connect was answered (accepted or refused). */
  method: 'icmp' | 'tcp';
  message: string;
}

/** Port used by the TCP reachability probe: discard, nothing listens there in the lab. */
export const TCP_PROBE_PORT = 9;

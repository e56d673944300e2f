// Holds persistent HTTP/1.1 keep-alive connections to lab pod servers (src/lab/podserver.ts) and
// exchanges one request and its response on each, one at a time, every --every ms, until told to
// stop. The integration tests run it inside a lab namespace: one process drives every connection,
// since process starts are slow.
//
//   node keepalive-client.js [--every MS] [--timeout MS] NAME=HOST:PORT [NAME=HOST:PORT ...]
//
// Prints {"ready":true} once every connection has had its first outcome. Reads lines on stdin:
// "phase NAME" counts the exchanges that follow under NAME (the first phase is "start"); "stop",
// or the end of stdin, finishes the exchanges in flight, closes the connections and prints one
// JSON line, a KeepAliveSummary. A failure (a socket error such as a reset, the peer closing the
// connection, an answer other than 200, no answer within --timeout) is recorded and ends that
// connection; the others carry on.

import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

/** The connection as the pod saw it (its answer's fields). */
export interface PodView {
  pod: string;
  client: string;
  clientPort: number;
}

export interface ConnectionSummary {
  name: string;
  target: string;
  /** Successful exchanges, in all and per phase. */
  exchanges: number;
  byPhase: Record<string, number>;
  /** The first answer's view; later answers that differed from it are counted in viewChanges. */
  view: PodView | null;
  viewChanges: number;
  /** The longest time between two successful exchanges, and the phase in which it ended. */
  maxGapMs: number;
  maxGapPhase: string;
  /** Why the connection ended before "stop": the error, its phase, and ms since that phase began. */
  failure: { error: string; phase: string; msIntoPhase: number } | null;
}

export interface KeepAliveSummary {
  connections: ConnectionSummary[];
}

interface Target {
  name: string;
  host: string;
  port: number;
}

function parseArgs(argv: string[]): { everyMs: number; timeoutMs: number; targets: Target[] } {
  let everyMs = 20;
  let timeoutMs = 1000;
  const targets: Target[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--every' || a === '--timeout') {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) throw new Error(`${a} needs a positive integer`);
      if (a === '--every') everyMs = v;
      else timeoutMs = v;
      continue;
    }
    const m = /^([\w-]+)=([\d.]+):(\d+)$/.exec(a);
    if (m === null) throw new Error(`bad target ${JSON.stringify(a)} (want NAME=HOST:PORT)`);
    targets.push({ name: m[1]!, host: m[2]!, port: Number(m[3]) });
  }
  if (targets.length === 0) throw new Error('no targets');
  return { everyMs, timeoutMs, targets };
}

const { everyMs, timeoutMs, targets } = parseArgs(process.argv.slice(2));
let phase = 'start';
let phaseStart = Date.now();
/** Set by "stop": no new exchanges start. */
let finishing = false;
/** Set once the exchanges in flight are over: closing a connection is no longer a failure. */
let closing = false;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

class Connection {
  readonly summary: ConnectionSummary;
  private readonly sock: Socket;
  private buf = Buffer.alloc(0);
  /** Wakes the exchange waiting for an answer, on data, error or close. */
  private wake: (() => void) | null = null;
  private lastOkAt = 0;

  constructor(private readonly t: Target) {
    this.summary = { name: t.name, target: `${t.host}:${t.port}`, exchanges: 0, byPhase: {}, view: null, viewChanges: 0, maxGapMs: 0, maxGapPhase: '', failure: null };
    this.sock = connect({ host: t.host, port: t.port, noDelay: true });
    this.sock.on('data', (d) => { this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]); this.wake?.(); });
    this.sock.on('error', (e: NodeJS.ErrnoException) => this.fail(e.code ?? e.message));
    this.sock.on('end', () => this.fail('closed by the peer (FIN)'));
    this.sock.on('close', () => this.fail('socket closed'));
  }

  get failed(): boolean {
    return this.summary.failure !== null;
  }

  /** Records the first failure (none once closing) and drops the connection. */
  fail(error: string): void {
    if (closing || this.failed) return;
    this.summary.failure = { error, phase, msIntoPhase: Date.now() - phaseStart };
    this.sock.destroy();
    this.wake?.();
  }

  /** Exchanges until stop or the first failure; `first` resolves after the first outcome. */
  async run(first: () => void): Promise<void> {
    let sentAt = 0;
    let reported = false;
    while (!finishing && !this.failed) {
      await sleep(Math.max(0, sentAt + everyMs - Date.now()));
      if (finishing || this.failed) break;
      sentAt = Date.now();
      const answer = await this.exchange();
      if (answer !== null) this.record(answer);
      if (!reported) { reported = true; first(); }
    }
    if (!reported) first();
  }

  close(): void {
    this.sock.end();
  }

  private record(a: PodView): void {
    const now = Date.now();
    const s = this.summary;
    s.exchanges++;
    s.byPhase[phase] = (s.byPhase[phase] ?? 0) + 1;
    if (s.view === null) s.view = a;
    else if (a.pod !== s.view.pod || a.client !== s.view.client || a.clientPort !== s.view.clientPort) s.viewChanges++;
    if (this.lastOkAt !== 0 && now - this.lastOkAt > s.maxGapMs) {
      s.maxGapMs = now - this.lastOkAt;
      s.maxGapPhase = phase;
    }
    this.lastOkAt = now;
  }

  /** One request and its answer; null after recording a failure. */
  private async exchange(): Promise<PodView | null> {
    const deadline = Date.now() + timeoutMs;
    this.sock.write(`GET / HTTP/1.1\r\nHost: ${this.t.host}:${this.t.port}\r\n\r\n`);
    for (;;) {
      if (this.failed) return null;
      const answer = this.takeAnswer();
      if (answer !== undefined) {
        if (typeof answer === 'string') { this.fail(answer); return null; }
        return answer;
      }
      const left = deadline - Date.now();
      if (left <= 0) { this.fail(`no answer within ${timeoutMs} ms`); return null; }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => { clearTimeout(timer); resolve(); };
      });
      this.wake = null;
    }
  }

  /** A complete answer from the buffer: its view, an error string, or undefined if incomplete. */
  private takeAnswer(): PodView | string | undefined {
    const head = this.buf.indexOf('\r\n\r\n');
    if (head < 0) return undefined;
    const headers = this.buf.subarray(0, head).toString('latin1');
    const status = /^HTTP\/1\.1 (\d{3})/.exec(headers)?.[1];
    const length = /\r\ncontent-length: *(\d+)/i.exec(headers)?.[1];
    if (status === undefined || length === undefined) return `unexpected answer: ${JSON.stringify(headers.slice(0, 80))}`;
    const end = head + 4 + Number(length);
    if (this.buf.length < end) return undefined;
    const body = this.buf.subarray(head + 4, end).toString('utf8');
    const rest = this.buf.length - end;
    this.buf = this.buf.subarray(end);
    if (status !== '200') return `status ${status}`;
    if (rest > 0) return `${rest} unexpected bytes after an answer`;
    try {
      const v = JSON.parse(body) as PodView;
      return { pod: v.pod, client: v.client, clientPort: v.clientPort };
    } catch {
      return `unexpected body: ${JSON.stringify(body.slice(0, 80))}`;
    }
  }
}

const conns = targets.map((t) => new Connection(t));
let outcomes = 0;
const runs = conns.map((c) => c.run(() => {
  if (++outcomes === conns.length) process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
}));

const stop = async (): Promise<void> => {
  if (finishing) return;
  finishing = true;
  // The exchanges in flight finish (or fail) before the connections close.
  await Promise.all(runs);
  closing = true;
  for (const c of conns) c.close();
  const summary: KeepAliveSummary = { connections: conns.map((c) => c.summary) };
  process.stdout.write(`${JSON.stringify(summary)}\n`, () => process.exit(0));
};

createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === 'phase' && arg !== undefined) { phase = arg; phaseStart = Date.now(); }
  else if (cmd === 'stop') void stop();
}).on('close', () => void stop());

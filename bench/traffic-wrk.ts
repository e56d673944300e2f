// wrk for the traffic benchmark: the argv of a short-connection run and the parser of its
// `--latency` report. Pure, so both can be unit-tested without a kernel.

export interface WrkOptions {
  url: string;
  threads: number;
  connections: number;
  durationSec: number;
  /** Per-request timeout; a request slower than this counts as a timeout error. */
  timeoutSec: number;
}

export interface WrkResult {
  requests: number;
  reqPerSec: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  /** connect + read + write + timeout socket errors, plus non-2xx/3xx responses. */
  errors: number;
  /** wrk's own words for the errors, e.g. "connect 0, read 3, write 0, timeout 0"; empty if none. */
  errorDetail: string;
}

/** `wrk` with `Connection: close`, so every request is a new TCP connection (a new flow for NAT). */
export function wrkArgv(o: WrkOptions): string[] {
  return [
    'wrk', '--latency',
    '-t', String(o.threads), '-c', String(o.connections), '-d', `${o.durationSec}s`,
    '--timeout', `${o.timeoutSec}s`,
    '-H', 'Connection: close',
    o.url,
  ];
}

/** wrk's latency with unit ("812.00us", "3.49ms", "1.02s", "2.00m") in milliseconds; NaN if unreadable. */
export function parseWrkTime(s: string): number {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(s.trim());
  if (m === null) return NaN;
  const scale = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'us' | 'ms' | 's' | 'm' | 'h'];
  return Number(m[1]) * scale;
}

/**
 * Reads a `wrk --latency` report. Throws Error naming the missing part when the output is not a
 * complete report (wrk failed to start, was killed, or printed nothing).
 */
export function parseWrk(stdout: string): WrkResult {
  const need = (re: RegExp, what: string): RegExpExecArray => {
    const m = re.exec(stdout);
    if (m === null) throw new Error(`wrk output has no ${what}: ${stdout.trim().slice(0, 300) || '(empty)'}`);
    return m;
  };
  const percentile = (p: number): number => {
    const v = parseWrkTime(need(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm'), `${p}% latency`)[1]!);
    if (Number.isNaN(v)) throw new Error(`wrk output: unreadable ${p}% latency`);
    return v;
  };
  const requests = Number(need(/^\s*(\d+) requests in /m, 'request count')[1]);
  const reqPerSec = Number(need(/^Requests\/sec:\s+([\d.]+)/m, 'Requests/sec')[1]);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(stdout);
  let errors = 0;
  const detail: string[] = [];
  if (sock !== null) {
    errors += sock.slice(1, 5).reduce((n, x) => n + Number(x), 0);
    detail.push(`connect ${sock[1]}, read ${sock[2]}, write ${sock[3]}, timeout ${sock[4]}`);
  }
  if (non2xx !== null) {
    errors += Number(non2xx[1]);
    detail.push(`non-2xx ${non2xx[1]}`);
  }
  return { requests, reqPerSec, p50Ms: percentile(50), p90Ms: percentile(90), p99Ms: percentile(99), errors, errorDetail: errors > 0 ? detail.join('; ') : '' };
}

// Results of the traffic benchmark: per-configuration medians (throughput, latency, the machine's
// CPU time per request) and ratios to the direct path, rendered as a Markdown table or as JSON. Pure.

/** What a configuration measures: a pod reaching the server pod, or the external client reaching it. */
export type PathKind = 'pod' | 'external';

export interface BenchConfig {
  /** Stable id: "direct/pod", "clusterip/iptables/1000", "nodeport/iptables/1000", "direct/external". */
  id: string;
  kind: PathKind;
  /** How the request reaches the server: straight to the pod IP, or through a service frontend. */
  via: 'direct' | 'clusterip' | 'nodeport';
  /** Human description of the path, e.g. "pod-1b -> ClusterIP 10.96.0.10:80". */
  label: string;
  /** null for the direct paths, measured with no data plane loaded at all. */
  dataplane: string | null;
  services: number | null;
  /** Role wrk runs in, and the URL it fetches (a lab address). */
  from: string;
  url: string;
}

export interface Sample {
  round: number;
  reqPerSec: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  errorDetail: string;
  /** Busy CPU seconds of the whole machine, every CPU, while wrk ran (see CPU_PER_REQUEST_NOTE). */
  cpuSeconds: number;
  /** cpuSeconds over the requests served, in microseconds. */
  cpuUsPerRequest: number;
}

export interface Row {
  id: string;
  kind: PathKind;
  via: BenchConfig['via'];
  label: string;
  dataplane: string | null;
  services: number | null;
  from: string;
  url: string;
  /** Medians over the rounds. */
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  cpuUsPerRequest: number;
  /** This row's median req/s over the direct row's of the same kind (1 for the direct rows). */
  ratioToDirect: number | null;
  p99RatioToDirect: number | null;
  cpuRatioToDirect: number | null;
  errors: number;
  samples: Sample[];
}

/** Median; the mean of the two middle values for an even count. NaN for an empty list. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** One row per configuration, in the order given; ratios against the direct row of the same kind. */
export function summarize(configs: readonly BenchConfig[], samples: ReadonlyMap<string, Sample[]>): Row[] {
  const rows = configs.map((c): Row => {
    const ss = samples.get(c.id) ?? [];
    return {
      id: c.id, kind: c.kind, via: c.via, label: c.label, dataplane: c.dataplane, services: c.services, from: c.from, url: c.url,
      reqPerSec: median(ss.map((s) => s.reqPerSec)),
      p50Ms: median(ss.map((s) => s.p50Ms)),
      p99Ms: median(ss.map((s) => s.p99Ms)),
      cpuUsPerRequest: median(ss.map((s) => s.cpuUsPerRequest)),
      ratioToDirect: null, p99RatioToDirect: null, cpuRatioToDirect: null,
      errors: ss.reduce((n, s) => n + s.errors, 0),
      samples: ss,
    };
  });
  for (const r of rows) {
    const direct = rows.find((d) => d.kind === r.kind && d.via === 'direct');
    if (direct === undefined) continue;
    if (direct.reqPerSec > 0 && direct.p99Ms > 0) {
      r.ratioToDirect = r.reqPerSec / direct.reqPerSec;
      r.p99RatioToDirect = r.p99Ms / direct.p99Ms;
    }
    if (direct.cpuUsPerRequest > 0 && Number.isFinite(r.cpuUsPerRequest)) r.cpuRatioToDirect = r.cpuUsPerRequest / direct.cpuUsPerRequest;
  }
  return rows;
}

const int = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
const fixed = (n: number | null, d: number): string => (n !== null && Number.isFinite(n) ? n.toFixed(d) : '-');

/** What the CPU column counts, printed under the table. */
export const CPU_PER_REQUEST_NOTE = 'CPU µs/req: busy CPU time of the whole machine, every CPU (user + nice + system + irq + softirq + steal in /proc/stat; '
  + 'idle and iowait not counted), from right before wrk starts to right after it exits, over the requests wrk completed in that run; median over the rounds. '
  + 'It counts everything the machine ran meanwhile: wrk, the server, both ends\' network stacks, the data plane, the agents, and any other load on the machine, '
  + 'so only ratios within one run mean much. It stands in for instructions per request (no hardware counters here); "CPU vs direct" divides by the direct row of the same kind.';

/** The Markdown table: one line per row. */
export function renderTable(rows: readonly Row[]): string {
  const lines = [
    '| path | data plane | services | req/s (median) | vs direct | p50 ms | p99 ms | p99 vs direct | CPU µs/req | CPU vs direct | errors |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(`| ${r.label} | ${r.dataplane ?? 'none'} | ${r.services === null ? '-' : int(r.services)} | ${int(r.reqPerSec)} | ${fixed(r.ratioToDirect, 2)} | ${fixed(r.p50Ms, 2)} | ${fixed(r.p99Ms, 2)} | ${fixed(r.p99RatioToDirect, 2)} | ${fixed(r.cpuUsPerRequest, 1)} | ${fixed(r.cpuRatioToDirect, 2)} | ${r.errors} |`);
  }
  return lines.join('\n') + '\n';
}

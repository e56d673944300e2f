// What the traffic benchmark reads from an ebpf agent: where its per-packet path is attached (from
// its log) and how many connection attempts its programs turned away (from its /metrics). Pure.

/** The interfaces an ebpf agent attached its per-packet programs to, and its SNAT ports; null when it did not. */
export function perPacketPath(logLines: readonly string[]): { devices: string[]; snatPorts: string } | null {
  for (const line of logLines) {
    const m = /eBPF per-packet path attached.*?devices=(\S+)(?:.*?snatPorts=(\S+))?/.exec(line);
    if (m !== null) return { devices: m[1]!.split(','), snatPorts: m[2] ?? '?' };
  }
  return null;
}

/**
 * Connection attempts the programs refused or dropped so far, per reason, summed over every frontend of a
 * Prometheus text page (rudder_ebpf_service_rejected_total). Empty when the page has none.
 */
export function rejectedFlows(metrics: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of metrics.matchAll(/^rudder_ebpf_service_rejected_total\{([^}]*)\}\s+(\S+)/gm)) {
    const reason = /(?:^|,)reason="([^"]*)"/.exec(m[1]!)?.[1] ?? '?';
    const n = Number(m[2]);
    if (Number.isFinite(n)) out.set(reason, (out.get(reason) ?? 0) + n);
  }
  return out;
}

/** `after` minus `before`, per reason, keeping only the reasons that grew. */
export function rejectedSince(before: ReadonlyMap<string, number>, after: ReadonlyMap<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [reason, n] of after) {
    const d = n - (before.get(reason) ?? 0);
    if (d > 0) out.set(reason, d);
  }
  return out;
}

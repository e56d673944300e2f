// A packet walker over a FakeNft table: it interprets the rule forms the nftables data plane
// writes (no others) and follows one new connection through the hooks, so tests can compare the
// table's answer with `rudder trace`'s. No tests here.
//
// Hooks, in the kernel's order: from a pod or an outside client, filter-prerouting (firewall),
// nat-prerouting (DNAT), then filter-input (destination local after DNAT) or filter-forward, then
// nat-postrouting; from the node itself, filter-output, nat-output, filter-output-post-dnat,
// nat-postrouting and, for a local destination, filter-input. A random pick is followed for every
// slot, so `backends` is every endpoint a new connection may reach.

import { inAnyCIDR } from '../../src/model/ip.js';
import type { FakeNft } from './nftables.js';

export interface SimPacket { src: string; dst: string; port: number; proto: string }
export interface SimResult { verdict: 'forward' | 'reject' | 'drop' | 'none'; backends: string[]; masquerade: boolean }

interface Ctx { saddr: string; daddr: string; dport: number; proto: string; mark: boolean; masq: boolean; dnat: boolean; local: (ip: string) => boolean }
/** What a chain decided: a verdict, and/or DNAT targets ("ip:port"), with the mark state. */
interface Outcome { verdict: 'drop' | 'reject' | 'return' | null; dnat: string[] | null }

type Table = NonNullable<ReturnType<FakeNft['table']>>;

export class NftSim {
  constructor(private readonly t: Table, private readonly nodeIPs: readonly string[]) {}

  private elems(set: string): Map<string, { value: string | undefined }> {
    const s = this.t.sets.get(set);
    if (s === undefined) throw new Error(`rule refers to missing set ${set}`);
    return s.elems;
  }

  private key(expr: string, c: Ctx): string {
    if (expr === 'ip daddr . meta l4proto . th dport') return `${c.daddr} . ${c.proto} . ${c.dport}`;
    if (expr === 'meta l4proto . th dport') return `${c.proto} . ${c.dport}`;
    throw new Error(`unknown key expression ${expr}`);
  }

  private inSet(ip: string, spec: string): boolean {
    const cidrs = spec.startsWith('{') ? spec.slice(1, -1).split(',').map((s) => s.trim()) : [spec];
    return inAnyCIDR(ip, cidrs);
  }

  /** Evaluates one chain; a goto/jump target's outcome is merged in. */
  private chain(name: string, c: Ctx, depth = 0): Outcome {
    if (depth > 16) throw new Error(`chain loop at ${name}`);
    const ch = this.t.chains.get(name);
    if (ch === undefined) throw new Error(`missing chain ${name}`);
    for (const rule of ch.rules) {
      const out = this.rule(rule, c, depth);
      if (out !== null) return out;
    }
    return { verdict: null, dnat: null };
  }

  private verdictOf(v: string, c: Ctx, depth: number): Outcome | null {
    const g = /^(goto|jump) (\S+)$/.exec(v);
    if (g !== null) {
      const o = this.chain(g[2]!, c, depth + 1);
      if (g[1] === 'jump' && o.verdict === null && o.dnat === null) return null; // jump returns: keep going
      if (o.verdict === 'return') return g[1] === 'goto' ? { verdict: 'return', dnat: null } : null;
      return o;
    }
    if (v === 'drop' || v === 'reject') return { verdict: v, dnat: null };
    if (v === 'return') return { verdict: 'return', dnat: null };
    throw new Error(`unknown verdict ${v}`);
  }

  /** null: the rule did not decide (no match, or a jump that came back). */
  private rule(rule: string, c: Ctx, depth: number): Outcome | null {
    let r = rule;
    const KEY = '(ip daddr \\. meta l4proto \\. th dport|meta l4proto \\. th dport)';
    for (;;) {
      let m: RegExpExecArray | null;
      if ((m = /^ct state new /.exec(r))) { r = r.slice(m[0].length); continue; }
      if ((m = /^ct status dnat /.exec(r))) { if (!c.dnat) return null; r = r.slice(m[0].length); continue; }
      if ((m = /^fib (saddr|daddr) type local /.exec(r))) { if (!c.local(m[1] === 'saddr' ? c.saddr : c.daddr)) return null; r = r.slice(m[0].length); continue; }
      if ((m = /^ip daddr != 127\.0\.0\.0\/8 /.exec(r))) { if (inAnyCIDR(c.daddr, ['127.0.0.0/8'])) return null; r = r.slice(m[0].length); continue; }
      if ((m = /^ip saddr (!= )?(\{[^}]*\}|\d[\d./]*) /.exec(r))) {
        if (this.inSet(c.saddr, m[2]!) === (m[1] !== undefined)) return null;
        r = r.slice(m[0].length);
        continue;
      }
      if ((m = /^ip (saddr|daddr) @(\S+) /.exec(r))) { if (!this.elems(m[2]!).has(m[1] === 'saddr' ? c.saddr : c.daddr)) return null; r = r.slice(m[0].length); continue; }
      if ((m = /^ip saddr \. ip daddr @(\S+) /.exec(r))) { if (!this.elems(m[1]!).has(`${c.saddr} . ${c.daddr}`)) return null; r = r.slice(m[0].length); continue; }
      if ((m = new RegExp(`^${KEY} \\. ip saddr != @(\\S+) `).exec(r))) {
        const k = this.key(m[1]!, c);
        const allowed = [...this.elems(m[2]!).keys()].some((e) => e.startsWith(`${k} . `) && inAnyCIDR(c.saddr, [e.slice(k.length + 3)]));
        if (allowed) return null;
        r = r.slice(m[0].length);
        continue;
      }
      if ((m = new RegExp(`^${KEY} @(\\S+) `).exec(r))) { if (!this.elems(m[2]!).has(this.key(m[1]!, c))) return null; r = r.slice(m[0].length); continue; }
      if ((m = /^meta mark & \S+ == 0 /.exec(r))) { if (c.mark) return null; r = r.slice(m[0].length); continue; }
      if ((m = /^meta l4proto (\w+) /.exec(r))) { if (c.proto !== m[1]) return null; r = r.slice(m[0].length); continue; }
      break;
    }
    // Statements.
    let m: RegExpExecArray | null;
    if ((m = new RegExp(`^${KEY} vmap @(\\S+)$`).exec(r))) {
      const e = this.elems(m[2]!).get(this.key(m[1]!, c));
      return e === undefined ? null : this.verdictOf(e.value!, c, depth);
    }
    if ((m = new RegExp(`^dnat ip to ${KEY} \\. numgen random mod (\\d+) map @(\\S+)$`).exec(r))) {
      const k = this.key(m[1]!, c);
      const targets: string[] = [];
      const elems = this.elems(m[3]!);
      for (let i = 0; i < Number(m[2]); i++) {
        const v = elems.get(`${k} . ${i}`)?.value;
        if (v === undefined) return null; // a missing slot: the lookup fails, the rule does not match
        targets.push(v.replace(' . ', ':'));
      }
      return { verdict: null, dnat: targets };
    }
    if ((m = /^numgen random mod (\d+) vmap \{ (.*) \}$/.exec(r))) {
      const all: string[] = [];
      for (const item of m[2]!.split(', ')) {
        const o = this.verdictOf(item.replace(/^\d+ : /, ''), c, depth);
        if (o?.dnat) all.push(...o.dnat);
      }
      return { verdict: null, dnat: all };
    }
    if ((m = /^dnat to ([\d.]+:\d+)$/.exec(r))) return { verdict: null, dnat: [m[1]!] };
    if (/^update @\S+ \{ ip saddr \}$/.test(r)) return null;
    if (/^meta mark set meta mark \| \S+$/.test(r)) { c.mark = true; return null; }
    if (/^meta mark set meta mark \^ \S+$/.test(r)) { c.mark = !c.mark; return null; }
    if (r === 'masquerade fully-random') { c.masq = true; return { verdict: 'return', dnat: null }; }
    if (r === 'reject with tcp reset') return { verdict: 'reject', dnat: null };
    if (/^(jump|goto) \S+$/.test(r) || ['drop', 'reject', 'return'].includes(r)) return this.verdictOf(r, c, depth);
    throw new Error(`the simulator does not know the rule ${JSON.stringify(rule)} (at ${JSON.stringify(r)})`);
  }

  /** Follows one new connection; see the file comment for the hooks. */
  walk(p: SimPacket): SimResult {
    const local = (ip: string): boolean => this.nodeIPs.includes(ip) || inAnyCIDR(ip, ['127.0.0.0/8']);
    const fromNode = this.nodeIPs.includes(p.src);
    const c: Ctx = { saddr: p.src, daddr: p.dst, dport: p.port, proto: p.proto.toLowerCase(), mark: false, masq: false, dnat: false, local };
    const stop = (o: Outcome): SimResult | null => (o.verdict === 'drop' || o.verdict === 'reject' ? { verdict: o.verdict, backends: [], masquerade: false } : null);
    const pre = this.chain(fromNode ? 'filter-output' : 'filter-prerouting', { ...c });
    if (stop(pre)) return stop(pre)!;
    const nat = this.chain(fromNode ? 'nat-output' : 'nat-prerouting', c);
    const dests = nat.dnat ?? [];
    let masquerade = false;
    for (const d of dests.length > 0 ? dests : [`${p.dst}:${p.port}`]) {
      const i = d.lastIndexOf(':');
      const after: Ctx = { ...c, daddr: d.slice(0, i), dport: Number(d.slice(i + 1)), dnat: dests.length > 0 };
      const hooks = fromNode ? ['filter-output-post-dnat', ...(local(after.daddr) ? ['filter-input'] : [])] : [local(after.daddr) ? 'filter-input' : 'filter-forward'];
      for (const h of hooks) {
        const o = this.chain(h, { ...after });
        if (stop(o)) return stop(o)!;
      }
      if (!fromNode && local(after.daddr)) continue; // delivered locally: no postrouting
      const post: Ctx = { ...after };
      this.chain('nat-postrouting', post);
      if (post.masq) masquerade = true;
    }
    if (dests.length === 0) return { verdict: 'none', backends: [], masquerade: false };
    return { verdict: 'forward', backends: [...new Set(dests)].sort(), masquerade };
  }
}

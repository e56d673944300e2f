// A fake nftables kernel for the nftables data plane's unit tests (no tests here). It applies
// `nft -f` input atomically with the errors the real kernel gives for what the data plane can get
// wrong (missing objects, elements that exist with other data, deleting what is still referenced,
// redefining an object), prints `nft -j list chains|table` in nft's JSON shape (the parts the
// data plane reads), and dumps a canonical text for comparing two tables.

import type { ExecResult } from '../../src/util/exec.js';

interface FakeChain { base: string; rules: string[] }
interface FakeElem { value: string | undefined; comment: string | undefined }
interface FakeSet { kind: 'set' | 'map'; spec: string; elems: Map<string, FakeElem> }
interface FakeTable { chains: Map<string, FakeChain>; sets: Map<string, FakeSet> }

function clone(t: FakeTable): FakeTable {
  return {
    chains: new Map([...t.chains].map(([k, c]) => [k, { base: c.base, rules: [...c.rules] }])),
    sets: new Map([...t.sets].map(([k, s]) => [k, { kind: s.kind, spec: s.spec, elems: new Map(s.elems) }])),
  };
}

/** Splits "a, b comment \"x, y\" : c" at top-level commas (outside quotes and braces). */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let q = false;
  let depth = 0;
  for (const ch of s) {
    if (ch === '"') q = !q;
    if (!q && ch === '{') depth++;
    if (!q && ch === '}') depth--;
    if (!q && depth === 0 && ch === ',') { out.push(cur.trim()); cur = ''; continue; }
    cur += ch;
  }
  if (cur.trim() !== '') out.push(cur.trim());
  return out;
}

function parseElem(item: string): { key: string; value: string | undefined; comment: string | undefined } {
  let comment: string | undefined;
  const c = / comment "([^"]*)"/.exec(item);
  if (c !== null) { comment = c[1]; item = item.replace(c[0], ''); }
  const i = item.indexOf(' : ');
  return i < 0 ? { key: item.trim(), value: undefined, comment } : { key: item.slice(0, i).trim(), value: item.slice(i + 3).trim(), comment };
}

/** Chains a rule or element value refers to (jump/goto targets, anonymous vmaps included). */
function chainRefs(text: string): string[] {
  return [...text.matchAll(/\b(?:jump|goto) ([A-Za-z0-9_.\/-]+)/g)].map((m) => m[1]!);
}

function setRefs(text: string): string[] {
  return [...text.matchAll(/@([A-Za-z0-9_.\/-]+)/g)].map((m) => m[1]!);
}

export class FakeNft {
  tables = new Map<string, FakeTable>();

  /** Applies a transaction: null on success, else an nft-like error (and nothing changed). */
  run(text: string): string | null {
    const work = new Map([...this.tables].map(([k, t]) => [k, clone(t)]));
    let n = 0;
    for (const line of text.split('\n')) {
      n++;
      if (line.trim() === '') continue;
      const err = this.apply(work, line);
      if (err !== null) return `/dev/stdin:${n}:1-1: Error: Could not process rule: ${err}\n${line}`;
    }
    this.tables = work;
    return null;
  }

  private apply(work: Map<string, FakeTable>, line: string): string | null {
    const m = /^(add|flush|delete) (table|chain|rule|set|map|element) (\S+) (\S+)(?: (\S+))?(?: (.*))?$/.exec(line);
    if (m === null) return `syntax error: ${line}`;
    const [, verb, what, family, tname, name = '', rest = ''] = m as unknown as string[];
    const tkey = `${family} ${tname}`;
    if (what === 'table') {
      if (verb === 'add') { if (!work.has(tkey)) work.set(tkey, { chains: new Map(), sets: new Map() }); return null; }
      if (verb === 'delete') return work.delete(tkey) ? null : 'No such file or directory';
      return 'unsupported';
    }
    const t = work.get(tkey);
    if (t === undefined) return 'No such file or directory';
    const referencedChain = (c: string): boolean =>
      [...t.chains.values()].some((ch) => ch.rules.some((r) => chainRefs(r).includes(c)))
      || [...t.sets.values()].some((s) => [...s.elems.values()].some((e) => e.value !== undefined && chainRefs(e.value).includes(c)));
    switch (what) {
      case 'chain': {
        const cur = t.chains.get(name!);
        if (verb === 'add') {
          if (cur === undefined) t.chains.set(name!, { base: rest, rules: [] });
          else if (rest !== '' && rest !== cur.base) return 'Operation not supported';
          return null;
        }
        if (cur === undefined) return 'No such file or directory';
        if (verb === 'flush') { cur.rules = []; return null; }
        if (referencedChain(name!)) return 'Device or resource busy';
        t.chains.delete(name!);
        return null;
      }
      case 'rule': {
        const ch = t.chains.get(name!);
        if (ch === undefined || verb !== 'add') return 'No such file or directory';
        if (chainRefs(rest).some((c) => !t.chains.has(c)) || setRefs(rest).some((s) => !t.sets.has(s))) return 'No such file or directory';
        ch.rules.push(rest);
        return null;
      }
      case 'set':
      case 'map': {
        const cur = t.sets.get(name!);
        if (verb === 'add') {
          const spec = rest.replace(/^\{ | \}$/g, '');
          if (cur === undefined) t.sets.set(name!, { kind: what, spec, elems: new Map() });
          else if (cur.spec !== spec || cur.kind !== what) return 'File exists';
          return null;
        }
        if (cur === undefined) return 'No such file or directory';
        if (verb === 'flush') { cur.elems.clear(); return null; }
        if ([...t.chains.values()].some((c) => c.rules.some((r) => setRefs(r).includes(name!)))) return 'Device or resource busy';
        t.sets.delete(name!);
        return null;
      }
      case 'element': {
        const s = t.sets.get(name!);
        if (s === undefined) return 'No such file or directory';
        for (const item of splitTop(rest.replace(/^\{ | \}$/g, ''))) {
          const e = parseElem(item);
          const cur = s.elems.get(e.key);
          if (verb === 'delete') {
            if (cur === undefined) return 'No such file or directory';
            s.elems.delete(e.key);
            continue;
          }
          if ((s.kind === 'map') !== (e.value !== undefined)) return 'Invalid argument';
          if (e.value !== undefined && chainRefs(e.value).some((c) => !t.chains.has(c))) return 'No such file or directory';
          if (cur !== undefined) {
            if (cur.value !== e.value) return 'File exists';
            continue;
          }
          s.elems.set(e.key, { value: e.value, comment: e.comment });
        }
        return null;
      }
    }
    return 'unsupported';
  }

  /** Canonical text of one table (default: ours): objects sorted by name, elements sorted. */
  dump(only = 'ip rudder'): string {
    const out: string[] = [];
    for (const [k, t] of [...this.tables].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (k !== only) continue;
      out.push(`table ${k}`);
      for (const [name, s] of [...t.sets].sort(([a], [b]) => (a < b ? -1 : 1))) {
        out.push(`  ${s.kind} ${name} { ${s.spec} }`);
        for (const [key, e] of [...s.elems].sort(([a], [b]) => (a < b ? -1 : 1))) {
          out.push(`    ${key}${e.comment === undefined ? '' : ` comment "${e.comment}"`}${e.value === undefined ? '' : ` : ${e.value}`}`);
        }
      }
      for (const [name, c] of [...t.chains].sort(([a], [b]) => (a < b ? -1 : 1))) {
        out.push(`  chain ${name}${c.base === '' ? '' : ` ${c.base}`}`);
        for (const r of c.rules) out.push(`    ${r}`);
      }
    }
    return out.join('\n') + '\n';
  }

  table(family = 'ip', name = 'rudder'): FakeTable | undefined {
    return this.tables.get(`${family} ${name}`);
  }

  listChainsJson(family: string): string {
    const out: unknown[] = [{ metainfo: { version: '1.0.6', json_schema_version: 1 } }];
    for (const [k, t] of this.tables) {
      const [f, table] = k.split(' ');
      if (f !== family) continue;
      for (const name of t.chains.keys()) out.push({ chain: { family: f, table, name, handle: 1 } });
    }
    return JSON.stringify({ nftables: out });
  }

  listTableJson(family: string, table: string): string | null {
    const t = this.tables.get(`${family} ${table}`);
    if (t === undefined) return null;
    const scalar = (s: string): string | number => (/^\d+$/.test(s) ? Number(s) : s);
    const expr = (s: string): unknown => {
      const parts = s.split(' . ');
      return parts.length === 1 ? scalar(s) : { concat: parts.map(scalar) };
    };
    const value = (v: string): unknown => {
      const g = /^(goto|jump) (\S+)$/.exec(v);
      if (g !== null) return { [g[1]!]: { target: g[2] } };
      if (v === 'drop' || v === 'accept') return { [v]: null };
      return expr(v);
    };
    const out: unknown[] = [{ metainfo: { version: '1.0.6', json_schema_version: 1 } }, { table: { family, name: table, handle: 1 } }];
    for (const [name, s] of t.sets) {
      const elem = [...s.elems].map(([key, e]) => {
        const k = e.comment === undefined ? expr(key) : { elem: { val: expr(key), comment: e.comment } };
        return e.value === undefined ? k : [k, value(e.value)];
      });
      out.push({ [s.kind]: { family, name, table, handle: 1, ...(elem.length > 0 ? { elem } : {}) } });
    }
    for (const [name, c] of t.chains) {
      out.push({ chain: { family, table, name, handle: 1 } });
      for (const r of c.rules) {
        const exprs: unknown[] = chainRefs(r).map((target) => ({ goto: { target } }));
        const d = /dnat to (?:([\d.]+)|\[([0-9a-f:]+)\]):(\d+)/.exec(r);
        if (d !== null) exprs.push({ dnat: { addr: d[1] ?? d[2], port: Number(d[3]) } });
        out.push({ rule: { family, table, chain: name, handle: 1, expr: exprs } });
      }
    }
    return JSON.stringify({ nftables: out });
  }
}

export interface NftCall { argv: string[]; input: string }

/** A fake exec answering `nft` from a FakeNft, and conntrack with "0 flow entries". */
export class FakeNftExec {
  calls: NftCall[] = [];
  kernel = new FakeNft();
  /** When set, the next `nft -f` fails with this result and changes nothing. */
  failNext: ExecResult | null = null;
  /** A kernel without IPv6: `nft -c` refuses anything ip6. */
  noIPv6 = false;

  readonly fn = async (argv: readonly string[], opts: { input?: string } = {}): Promise<ExecResult> => {
    this.calls.push({ argv: [...argv], input: opts.input ?? '' });
    const ok = (stdout = ''): ExecResult => ({ code: 0, stdout, stderr: '' });
    if (argv[0] === 'conntrack') return { code: 1, stdout: '', stderr: 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n' };
    if (argv[0] !== 'nft') return { code: 127, stdout: '', stderr: `${argv[0]}: not found` };
    if (argv[1] === '--version') return ok('nftables v1.0.6 (Lester Gooch #5)\n');
    if (argv[1] === '-c' && argv[2] === '-f') {
      // Check mode: validated against a copy, never applied.
      if (this.noIPv6 && /\bip6\b/.test(opts.input ?? '')) return { code: 1, stdout: '', stderr: 'Error: Could not process rule: Address family not supported by protocol\n' };
      const copy = new FakeNft();
      copy.tables = this.kernel.tables;
      const err = copy.run(opts.input ?? '');
      return err === null ? ok() : { code: 1, stdout: '', stderr: err + '\n' };
    }
    if (argv[1] === '-f') {
      if (this.failNext !== null) {
        const r = this.failNext;
        this.failNext = null;
        return r;
      }
      const err = this.kernel.run(opts.input ?? '');
      return err === null ? ok() : { code: 1, stdout: '', stderr: err + '\n' };
    }
    if (argv[1] === '-j' && argv[2] === 'list' && argv[3] === 'chains') return ok(this.kernel.listChainsJson(argv[4] ?? 'ip'));
    if (argv[1] === '-j' && argv[2] === 'list' && argv[3] === 'table') {
      const text = this.kernel.listTableJson(argv[4]!, argv[5]!);
      return text === null ? { code: 1, stdout: '', stderr: 'Error: No such file or directory\n' } : ok(text);
    }
    return { code: 1, stdout: '', stderr: `fake nft: unsupported ${argv.join(' ')}` };
  };

  transactions(): string[] {
    return this.calls.filter((c) => c.argv[1] === '-f').map((c) => c.input);
  }

  last(): string {
    const t = this.transactions();
    return t[t.length - 1] ?? '';
  }

  conntrack(): string[][] {
    return this.calls.filter((c) => c.argv[0] === 'conntrack').map((c) => c.argv);
  }
}

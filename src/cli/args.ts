// A small, strict flag parser: --name value, --name=value, repeatable flags, booleans, and
// short aliases. Unknown flags are usage errors, never silently ignored.

export class UsageError extends Error {
  readonly code = 'EUSAGE';
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface FlagSpec {
  /** Takes no value. */
  boolean?: boolean;
  /** May be given more than once (values accumulate; commas also split when `list` is set). */
  repeat?: boolean;
  /** Comma-separated values are split into several. */
  list?: boolean;
  alias?: string;
  /** Shown in help. */
  help: string;
  value?: string;
}

export type FlagSpecs = Record<string, FlagSpec>;

export interface Parsed {
  flags: Map<string, string[]>;
  positional: string[];
}

export function parseArgs(argv: readonly string[], specs: FlagSpecs): Parsed {
  const flags = new Map<string, string[]>();
  const positional: string[] = [];
  const byAlias = new Map<string, string>();
  for (const [name, s] of Object.entries(specs)) if (s.alias !== undefined) byAlias.set(s.alias, name);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      positional.push(a);
      continue;
    }
    let name: string;
    let inline: string | undefined;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      name = eq === -1 ? a.slice(2) : a.slice(2, eq);
      inline = eq === -1 ? undefined : a.slice(eq + 1);
    } else {
      const n = byAlias.get(a.slice(1));
      if (n === undefined) throw new UsageError(`unknown flag ${a}`);
      name = n;
    }
    const spec = specs[name];
    if (spec === undefined) throw new UsageError(`unknown flag --${name}`);
    let values: string[];
    if (spec.boolean) {
      if (inline !== undefined && inline !== 'true' && inline !== 'false') throw new UsageError(`--${name} takes no value (or =true/=false)`);
      values = [inline ?? 'true'];
    } else {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new UsageError(`--${name} needs a value`);
      values = spec.list ? v.split(',').map((x) => x.trim()).filter((x) => x !== '') : [v];
      // `-f a.yaml b.yaml`: a file flag keeps taking following non-flag words.
      if (spec.repeat && spec.alias === 'f' && inline === undefined) {
        while (i + 1 < argv.length && !argv[i + 1]!.startsWith('-')) values.push(argv[++i]!);
      }
    }
    const prev = flags.get(name);
    if (prev !== undefined && !spec.repeat && !spec.list) throw new UsageError(`--${name} given twice`);
    flags.set(name, [...(prev ?? []), ...values]);
  }
  return { flags, positional };
}

export function flagOne(p: Parsed, name: string): string | undefined {
  const v = p.flags.get(name);
  return v === undefined ? undefined : v[v.length - 1];
}

export function flagAll(p: Parsed, name: string): string[] {
  return p.flags.get(name) ?? [];
}

export function flagBool(p: Parsed, name: string): boolean {
  return flagOne(p, name) === 'true';
}

export function flagInt(p: Parsed, name: string, min: number, max: number): number | undefined {
  const v = flagOne(p, name);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`--${name}: ${JSON.stringify(v)} must be an integer from ${min} to ${max}`);
  return Number(v);
}

export function renderHelp(usage: string, specs: FlagSpecs): string {
  const rows = Object.entries(specs).map(([name, s]) => {
    const left = `${s.alias ? `-${s.alias}, ` : '    '}--${name}${s.boolean ? '' : ` ${s.value ?? 'VALUE'}`}`;
    return `  ${left.padEnd(34)} ${s.help}`;
  });
  return `${usage}\n\nFlags:\n${rows.join('\n')}\n`;
}

// An iptables-restore transaction in the knftables style: adding never throws (a bad argument is
// recorded and reported by `error()`), and `toString()` is exactly the text handed to
// `iptables-restore --noflush` on stdin.
//
// Layout of each table section, as kube-proxy writes it: the table header, every chain line
// (":NAME - [0:0]", which creates the chain or flushes it under --noflush), then the -A rules in
// the order they were added, then -X (delete) and -D lines, then -I (insert) lines, then COMMIT.
// The nat table comes first: iptables-restore commits each table at its COMMIT line, and the nat
// table carries almost everything that can fail, so a failure there leaves both tables as they were;
// a failure in the filter table leaves the nat table updated until the full sync that follows.

export type TableName = 'nat' | 'filter';
const TABLE_ORDER: readonly TableName[] = ['nat', 'filter'];

/** iptables' limit on chain names (XT_EXTENSION_MAXNAMELEN - 1). */
const MAX_CHAIN = 28;
const CHAIN_RE = /^[A-Za-z0-9_.-]+$/;
const SAFE_ARG = /^[^\s"'\\]+$/;

interface TableSection {
  chains: string[];
  declared: Set<string>;
  rules: string[];
  tail: string[];
  inserts: string[];
}

/** Quotes an argument for iptables-restore when it contains spaces (comments do). */
function quoteArg(arg: string): string {
  return SAFE_ARG.test(arg) ? arg : `"${arg}"`;
}

export class Transaction {
  private readonly tables = new Map<TableName, TableSection>();
  private firstError: string | null = null;
  private ruleCount = 0;

  private section(table: TableName): TableSection {
    let s = this.tables.get(table);
    if (s === undefined) {
      s = { chains: [], declared: new Set(), rules: [], tail: [], inserts: [] };
      this.tables.set(table, s);
    }
    return s;
  }

  private fail(msg: string): void {
    if (this.firstError === null) this.firstError = msg;
  }

  private checkChain(chain: string): boolean {
    if (chain.length === 0 || chain.length > MAX_CHAIN || !CHAIN_RE.test(chain)) {
      this.fail(`invalid chain name ${JSON.stringify(chain)} (1-${MAX_CHAIN} characters of [A-Za-z0-9_.-])`);
      return false;
    }
    return true;
  }

  private formatArgs(args: readonly string[]): string | null {
    const out: string[] = [];
    for (const a of args) {
      if (a.length === 0 || /["\\\n\r\0]/.test(a)) {
        this.fail(`invalid rule argument ${JSON.stringify(a)}: empty, or contains a quote, backslash or line break`);
        return null;
      }
      out.push(quoteArg(a));
    }
    return out.join(' ');
  }

  /** Whether `chain` already has a chain line in `table`. */
  hasChain(table: TableName, chain: string): boolean {
    return this.tables.get(table)?.declared.has(chain) ?? false;
  }

  /** Creates the chain, or flushes it if it exists (":NAME - [0:0]"). Idempotent within a transaction. */
  chain(table: TableName, chain: string): this {
    if (!this.checkChain(chain)) return this;
    const s = this.section(table);
    if (!s.declared.has(chain)) {
      s.declared.add(chain);
      s.chains.push(`:${chain} - [0:0]`);
    }
    return this;
  }

  /** Appends a rule to a chain: "-A CHAIN args...". */
  append(table: TableName, chain: string, ...args: readonly string[]): this {
    if (!this.checkChain(chain)) return this;
    const line = this.formatArgs(args);
    if (line === null) return this;
    this.section(table).rules.push(line.length > 0 ? `-A ${chain} ${line}` : `-A ${chain}`);
    this.ruleCount++;
    return this;
  }

  /** Flushes and deletes a chain; nothing may still jump to it once the transaction is applied. */
  deleteChain(table: TableName, chain: string): this {
    if (!this.checkChain(chain)) return this;
    this.chain(table, chain);
    this.section(table).tail.push(`-X ${chain}`);
    this.ruleCount++;
    return this;
  }

  /** Deletes one rule given its exact specification (as iptables-save prints it, without "-A CHAIN"). */
  deleteRule(table: TableName, chain: string, args: readonly string[]): this {
    if (!this.checkChain(chain)) return this;
    const line = this.formatArgs(args);
    if (line === null) return this;
    this.section(table).tail.push(`-D ${chain} ${line}`);
    this.ruleCount++;
    return this;
  }

  /** Inserts a rule at the top of a (typically built-in) chain: "-I CHAIN 1 args...". */
  insertFirst(table: TableName, chain: string, ...args: readonly string[]): this {
    if (!this.checkChain(chain)) return this;
    const line = this.formatArgs(args);
    if (line === null) return this;
    this.section(table).inserts.push(`-I ${chain} 1 ${line}`);
    this.ruleCount++;
    return this;
  }

  /** The first invalid addition, or null. */
  error(): string | null {
    return this.firstError;
  }

  /** Rule lines (-A, -I, -D, -X) in the transaction. */
  get rules(): number {
    return this.ruleCount;
  }

  isEmpty(): boolean {
    return this.tables.size === 0;
  }

  /** The exact iptables-restore input. */
  toString(): string {
    // No spreading into push(): a large cluster has hundreds of thousands of lines.
    let out = '';
    for (const name of TABLE_ORDER) {
      const s = this.tables.get(name);
      if (s === undefined) continue;
      out += `*${name}\n`;
      for (const part of [s.chains, s.rules, s.tail, s.inserts]) if (part.length > 0) out += part.join('\n') + '\n';
      out += 'COMMIT\n';
    }
    return out;
  }
}

/** A transaction that keeps nothing: lets a renderer compute what it would write without paying for it. */
export class DiscardTransaction extends Transaction {
  override chain(): this { return this; }
  override append(_table: TableName, _chain: string, ..._args: readonly string[]): this { return this; }
  override deleteChain(): this { return this; }
  override deleteRule(): this { return this; }
  override insertFirst(): this { return this; }
}

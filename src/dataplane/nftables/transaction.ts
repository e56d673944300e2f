// An `nft -f -` transaction in the style of knftables: adding never throws (a bad argument is
// recorded and reported by `error()`), and `toString()` is exactly the text handed to nft on stdin.
// nft applies the whole text as one kernel transaction: all of it or nothing.
//
// One command per line, in the order added, except that consecutive element operations with the
// same verb on the same set are written as one command (`add element ip rudder m { a : x, b : y }`):
// nft parses one large command much faster than thousands of small ones.

/** Base chain properties: `{ type nat hook prerouting priority -100 ; policy accept ; }`. */
export interface BaseChainSpec {
  type: 'filter' | 'nat';
  hook: 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';
  priority: number;
}

export type SetKind = 'set' | 'map';

/** nft object names: a letter, underscore or dot first, then [A-Za-z0-9_./-]; at most 255 characters. */
const NAME_RE = /^[A-Za-z_.][A-Za-z0-9_./-]{0,254}$/;
/** Rule text (anonymous sets and vmaps use braces), set specs, element keys and values: one line, no quotes or '#'. */
const TEXT_RE = /^[^\n\r"#;]*$/;
const SPEC_RE = /^[^\n\r"#{}]*$/;
const ELEM_RE = /^[^\n\r"#;{},]+$/;
/** The kernel keeps at most 128 bytes of comment per element (NFTNL_UDATA_COMMENT_MAXLEN). */
export const MAX_COMMENT = 128;

interface ElemOp {
  verb: 'add' | 'delete';
  set: string;
  items: string[];
}

export class Transaction {
  private readonly lines: Array<string | ElemOp> = [];
  private firstError: string | null = null;
  private ops = 0;
  private readonly prefix: string;

  /** `family table` of every command: "ip rudder" (IPv4) or "ip6 rudder" (IPv6). */
  constructor(readonly family = 'ip', readonly table = 'rudder') {
    this.prefix = `${family} ${table}`;
  }

  private fail(msg: string): void {
    if (this.firstError === null) this.firstError = msg;
  }

  private name(what: string, name: string): boolean {
    if (!NAME_RE.test(name)) {
      this.fail(`invalid ${what} name ${JSON.stringify(name)}`);
      return false;
    }
    return true;
  }

  private text(what: string, s: string, re = TEXT_RE): boolean {
    if (!re.test(s)) {
      this.fail(`invalid ${what} ${JSON.stringify(s)}: line breaks, quotes and '#' are not allowed (';' and braces only where the syntax needs them)`);
      return false;
    }
    return true;
  }

  private line(s: string): this {
    this.lines.push(s);
    this.ops++;
    return this;
  }

  private comment(c: string | undefined): string {
    if (c === undefined) return '';
    if (c.length === 0 || Buffer.byteLength(c) > MAX_COMMENT || !/^[^\n\r"\\]*$/.test(c)) {
      this.fail(`invalid comment ${JSON.stringify(c)} (1-${MAX_COMMENT} bytes, no quote, backslash or line break)`);
      return '';
    }
    return ` comment "${c}"`;
  }

  addTable(comment?: string): this {
    const c = this.comment(comment);
    return this.line(c === '' ? `add table ${this.prefix}` : `add table ${this.prefix} {${c} ; }`);
  }

  deleteTable(): this {
    return this.line(`delete table ${this.prefix}`);
  }

  /** Creates a chain (a base chain when `base` is given); a no-op if it exists with the same properties. */
  addChain(name: string, base?: BaseChainSpec): this {
    if (!this.name('chain', name)) return this;
    if (base === undefined) return this.line(`add chain ${this.prefix} ${name}`);
    if (!Number.isInteger(base.priority)) {
      this.fail(`invalid priority ${base.priority} for chain ${name}`);
      return this;
    }
    return this.line(`add chain ${this.prefix} ${name} { type ${base.type} hook ${base.hook} priority ${base.priority} ; policy accept ; }`);
  }

  flushChain(name: string): this {
    return this.name('chain', name) ? this.line(`flush chain ${this.prefix} ${name}`) : this;
  }

  /** Deletes a chain; it must exist and nothing may refer to it once the transaction is applied. */
  deleteChain(name: string): this {
    return this.name('chain', name) ? this.line(`delete chain ${this.prefix} ${name}`) : this;
  }

  /** Appends a rule, written in nft syntax (e.g. "ip daddr . meta l4proto . th dport vmap @service-ips"). */
  addRule(chain: string, rule: string): this {
    if (!this.name('chain', chain) || !this.text('rule', rule)) return this;
    if (rule.trim() === '') {
      this.fail(`empty rule for chain ${chain}`);
      return this;
    }
    return this.line(`add rule ${this.prefix} ${chain} ${rule}`);
  }

  /** Creates a set or map with its declaration, e.g. "type ipv4_addr ; flags interval ;". */
  addSet(kind: SetKind, name: string, spec: string, comment?: string): this {
    if (!this.name(kind, name) || !this.text(`${kind} spec`, spec, SPEC_RE)) return this;
    const c = this.comment(comment);
    return this.line(`add ${kind} ${this.prefix} ${name} { ${spec}${c === '' ? '' : `${c} ;`} }`);
  }

  flushSet(kind: SetKind, name: string): this {
    return this.name(kind, name) ? this.line(`flush ${kind} ${this.prefix} ${name}`) : this;
  }

  deleteSet(kind: SetKind, name: string): this {
    return this.name(kind, name) ? this.line(`delete ${kind} ${this.prefix} ${name}`) : this;
  }

  private elem(verb: 'add' | 'delete', set: string, item: string): this {
    const last = this.lines[this.lines.length - 1];
    if (typeof last === 'object' && last.verb === verb && last.set === set) last.items.push(item);
    else this.lines.push({ verb, set, items: [item] });
    this.ops++;
    return this;
  }

  /** Adds one element: `key`, or `key : value` for a map ("10.96.0.1 . tcp . 80", "goto ip-internal"). */
  addElement(set: string, key: string, value?: string, comment?: string): this {
    if (!this.name('set', set) || !this.text('element key', key, ELEM_RE)) return this;
    if (value !== undefined && !this.text('element value', value, ELEM_RE)) return this;
    const c = this.comment(comment);
    return this.elem('add', set, value === undefined ? `${key}${c}` : `${key}${c} : ${value}`);
  }

  /** Deletes one element by key; it must exist. */
  deleteElement(set: string, key: string): this {
    if (!this.name('set', set) || !this.text('element key', key, ELEM_RE)) return this;
    return this.elem('delete', set, key);
  }

  /** The first invalid addition, or null. */
  error(): string | null {
    return this.firstError;
  }

  /** Commands added (each element counts as one). */
  get operations(): number {
    return this.ops;
  }

  isEmpty(): boolean {
    return this.lines.length === 0;
  }

  /** The exact `nft -f -` input. */
  toString(): string {
    const out: string[] = [];
    for (const l of this.lines) {
      out.push(typeof l === 'string' ? l : `${l.verb} element ${this.prefix} ${l.set} { ${l.items.join(', ')} }`);
    }
    return out.length === 0 ? '' : out.join('\n') + '\n';
  }
}

// Structured logs: one line per event, "level msg key=value ...", or JSON with RUDDER_LOG_FORMAT=json.
// Written to stderr so command output on stdout stays machine-readable.

export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
}

export interface LogSink {
  write(line: string): void;
}

function fmtValue(v: unknown): string {
  if (v instanceof Error) return JSON.stringify(v.message);
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s !== undefined && /^[^\s"=]+$/.test(s) ? s : JSON.stringify(s ?? String(v));
}

export function createLogger(opts: { level?: Level; json?: boolean; sink?: LogSink; base?: Fields } = {}): Logger {
  const level = opts.level ?? ((process.env['RUDDER_LOG_LEVEL'] as Level | undefined) ?? 'info');
  const json = opts.json ?? process.env['RUDDER_LOG_FORMAT'] === 'json';
  const sink = opts.sink ?? { write: (l: string) => process.stderr.write(l + '\n') };
  const base = opts.base ?? {};
  const min = ORDER[level] ?? ORDER.info;
  const emit = (lvl: Level, msg: string, fields?: Fields): void => {
    if (ORDER[lvl] < min) return;
    // A field without a value is left out, not printed as "undefined".
    const all = Object.fromEntries(Object.entries({ ...base, ...fields }).filter(([, v]) => v !== undefined));
    if (json) {
      sink.write(JSON.stringify({ ts: new Date().toISOString(), level: lvl, msg, ...Object.fromEntries(Object.entries(all).map(([k, v]) => [k, v instanceof Error ? v.message : v])) }));
    } else {
      const kv = Object.entries(all).map(([k, v]) => `${k}=${fmtValue(v)}`).join(' ');
      sink.write(`${new Date().toISOString()} ${lvl.toUpperCase().padEnd(5)} ${msg}${kv ? ' ' + kv : ''}`);
    }
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (f) => createLogger({ level, json, sink, base: { ...base, ...f } }),
  };
}

/** A logger that keeps lines in memory, for tests. */
export function memoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const l = createLogger({ level: 'debug', json: false, sink: { write: (s) => lines.push(s) } });
  return Object.assign(l, { lines });
}

// The standalone source: Kubernetes objects from YAML/JSON manifests (files or directories),
// watched for changes. Emits the same events as the kubernetes source.

import { readdirSync, readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { Logger } from '../observe/log.js';
import { decodeObject, type DecodeError } from './decode.js';
import { objectKey, type ProxyObject, type Source, type SourceEvent } from './objects.js';

const MANIFEST_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

/** A manifest cannot be used at all: unreadable, not YAML/JSON, or a document that is no object. */
export class ManifestError extends Error {
  readonly code = 'EMANIFEST';
  constructor(readonly file: string, readonly document: number | null, readonly field: string | null, problem: string) {
    super(`${file}${document !== null ? `: document ${document}` : ''}${field !== null ? `: ${field}` : ''}: ${problem}`);
    this.name = 'ManifestError';
  }
}

/** An object that was read but not used, with where it came from. */
export interface SkippedObject {
  file: string;
  /** 1-based document index in the file, with the List item when it came from a List. */
  where: string;
  key: string | null;
  reason: string;
  error?: DecodeError;
}

export interface LoadedFile {
  objects: ProxyObject[];
  invalid: SkippedObject[];
  ignored: SkippedObject[];
}

/** Expands files and directories (their direct *.yaml, *.yml, *.json children) into files, sorted. */
export function expandPaths(paths: readonly string[]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    let st;
    try {
      st = statSync(p);
    } catch (e) {
      throw new ManifestError(p, null, null, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (st.isDirectory()) {
      for (const f of readdirSync(p).sort()) {
        if (!MANIFEST_EXTENSIONS.has(extname(f)) || f.startsWith('.')) continue;
        // Only regular files (or links to them, as a ConfigMap volume's are): reading a FIFO
        // would block until someone writes to it. A directory's other entries are not manifests.
        try {
          if (!statSync(join(p, f)).isFile()) continue;
        } catch {
          continue; // gone meanwhile, or a dangling link: nothing to read
        }
        out.push(join(p, f));
      }
    } else {
      out.push(p);
    }
  }
  return out;
}

/**
 * Reads one manifest file. Throws ManifestError when the file as a whole is unusable (syntax,
 * a document that is not an object, a kind-less document); an object with a bad field is
 * reported in `invalid` and the rest of the file still loads.
 */
export function loadFile(file: string): LoadedFile {
  let text: string;
  try {
    // Never opened if it is not a regular file: a FIFO would block the whole process.
    if (!statSync(file).isFile()) throw new ManifestError(file, null, null, 'not a regular file');
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof ManifestError) throw e;
    throw new ManifestError(file, null, null, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return parseFile(file, text);
  } catch (e) {
    if (e instanceof ManifestError) throw e;
    // What the parsers and the decoder cannot hold: nesting deeper than the stack, alias
    // expansion past its limit. Named, so the message says which file.
    throw new ManifestError(file, null, null, `cannot be read as manifests: ${e instanceof RangeError ? 'nested too deeply' : (e as Error).message}`);
  }
}

function parseFile(file: string, text: string): LoadedFile {
  const result: LoadedFile = { objects: [], invalid: [], ignored: [] };
  // JSON is YAML too, but the YAML parser keeps a syntax tree per node: a 10,000-service JSON
  // manifest costs hundreds of MB through it, and a few MB through JSON.parse.
  if (extname(file) === '.json') {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (e) {
      throw new ManifestError(file, 1, null, `not valid JSON: ${(e as Error).message}`);
    }
    addDocument(result, file, 1, raw);
    return result;
  }
  const docs = parseAllDocuments(text, { prettyErrors: false });
  const list = Array.isArray(docs) ? docs : [docs];
  let index = 0;
  for (const doc of list) {
    index++;
    const err = doc.errors[0];
    if (err !== undefined) {
      const pos = err.linePos?.[0];
      throw new ManifestError(file, index, null, `not valid YAML${pos ? ` (line ${pos.line}, column ${pos.col})` : ''}: ${err.message.split('\n')[0]}`);
    }
    addDocument(result, file, index, doc.toJS({ maxAliasCount: 1000 }));
  }
  return result;
}

/** One document: an object, or a List of them. Throws ManifestError when it is neither. */
function addDocument(result: LoadedFile, file: string, index: number, raw: unknown): void {
  if (raw === null || raw === undefined) return; // empty document, e.g. a trailing "---"
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ManifestError(file, index, '(root)', 'must be a Kubernetes object (a mapping with apiVersion and kind)');
  const obj = raw as Record<string, unknown>;
  if (typeof obj['kind'] !== 'string' || obj['kind'] === '') throw new ManifestError(file, index, 'kind', 'is required');
  if (typeof obj['apiVersion'] !== 'string' || obj['apiVersion'] === '') throw new ManifestError(file, index, 'apiVersion', 'is required');
  if (obj['kind'].endsWith('List') && Array.isArray(obj['items'])) {
    obj['items'].forEach((item, i) => addObject(result, file, index, `document ${index}, items[${i}]`, item));
  } else if (obj['kind'].endsWith('List')) {
    throw new ManifestError(file, index, 'items', 'must be a list');
  } else {
    addObject(result, file, index, `document ${index}`, obj);
  }
}

function addObject(result: LoadedFile, file: string, document: number, where: string, raw: unknown): void {
  const r = decodeObject(raw);
  if (r.status === 'ok') {
    result.objects.push(r.object);
  } else if (r.status === 'ignored') {
    result.ignored.push({ file, where, key: r.key, reason: r.reason });
  } else {
    // Even one whose name cannot be read (key null) is skipped alone: the file's other objects load.
    result.invalid.push({ file, where, key: r.key, reason: r.error.message, error: r.error });
  }
}

export function describeSkipped(s: SkippedObject): string {
  return `${s.file}: ${s.where}: ${s.reason}`;
}

export interface LoadedManifests {
  objects: ProxyObject[];
  invalid: SkippedObject[];
  ignored: SkippedObject[];
}

/** Reads every manifest under `paths`. Throws ManifestError on the first unusable file. */
export function loadManifests(paths: readonly string[]): LoadedManifests {
  const out: LoadedManifests = { objects: [], invalid: [], ignored: [] };
  for (const f of expandPaths(paths)) {
    const l = loadFile(f);
    out.objects.push(...l.objects);
    out.invalid.push(...l.invalid);
    out.ignored.push(...l.ignored);
  }
  return out;
}

export interface FileSourceOptions {
  paths: string[];
  logger: Logger;
  /** Quiet period after a file event before re-reading, to coalesce editors' write bursts. */
  debounceMs?: number;
}

interface Held {
  file: string;
  object: ProxyObject;
  json: string;
}

/**
 * Watches manifests. A file that becomes unreadable or invalid YAML keeps its previous objects
 * (logged), so a half-saved edit never withdraws services; an invalid object is skipped and
 * logged, and keeps the last good version its file gave it; an ignored one (another kind, another
 * API version) gets a line too.
 */
export class FileSource implements Source {
  /** The definition in force for each key (what was last emitted). */
  private readonly held = new Map<string, Held>();
  /** Every file's own objects. */
  private readonly byFile = new Map<string, Map<string, Held>>();
  private readonly watchers: FSWatcher[] = [];
  private readonly pending = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private onEvent: ((e: SourceEvent) => void) | null = null;
  private files: string[] = [];

  constructor(private readonly opts: FileSourceOptions) {}

  /** Loads every file (throwing ManifestError on an unusable one), emits them, then watches. */
  async start(onEvent: (e: SourceEvent) => void): Promise<void> {
    this.onEvent = onEvent;
    this.files = expandPaths(this.opts.paths).map((f) => resolve(f));
    const loaded = this.files.map((f) => [f, loadFile(f)] as const);
    for (const [file, l] of loaded) this.absorb(file, l);
    for (const kind of ['Service', 'EndpointSlice', 'Node'] as const) {
      const keys = [...this.held.values()].filter((h) => h.object.kind === kind).map((h) => objectKey(h.object));
      onEvent({ type: 'synced', kind, keys });
    }
    this.watch();
  }

  async stop(): Promise<void> {
    for (const w of this.watchers) w.close();
    this.watchers.length = 0;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.onEvent = null;
  }

  private watch(): void {
    const dirs = new Map<string, Set<string> | null>();
    for (const p of this.opts.paths.map((x) => resolve(x))) {
      if (statSync(p).isDirectory()) dirs.set(p, null);
      else {
        // Watch the directory: editors replace files by rename, which a file watch would miss.
        const d = dirname(p);
        const names = dirs.get(d);
        if (names === null) continue;
        dirs.set(d, (names ?? new Set<string>()).add(basename(p)));
      }
    }
    for (const [dir, names] of dirs) {
      const w = watch(dir, { persistent: true }, (_event, filename) => {
        if (filename === null) return;
        const name = filename.toString();
        if (name.startsWith('..')) {
          // A ConfigMap volume's update: the kubelet writes a new timestamped directory and swaps
          // the `..data` link to it; the manifests are links through `..data`, and no event names
          // them. Every manifest of this directory is read again.
          for (const f of this.files) if (dirname(f) === dir) this.pending.add(f);
          try {
            if (names === null) for (const f of expandPaths([dir])) this.pending.add(resolve(f));
          } catch (e) {
            this.opts.logger.warn('manifest directory unreadable', { dir, error: e as Error });
          }
        } else if (names !== null ? !names.has(name) : !MANIFEST_EXTENSIONS.has(extname(name)) || name.startsWith('.')) {
          return;
        } else {
          this.pending.add(join(dir, name));
        }
        if (this.timer !== null) clearTimeout(this.timer);
        this.timer = setTimeout(() => this.reloadPending(), this.opts.debounceMs ?? 50);
      });
      w.on('error', (e) => this.opts.logger.warn('manifest watch failed', { dir, error: e }));
      this.watchers.push(w);
    }
  }

  private reloadPending(): void {
    this.timer = null;
    const files = [...this.pending];
    this.pending.clear();
    for (const file of files) {
      let exists = true;
      try {
        statSync(file);
      } catch {
        exists = false;
      }
      if (!exists) {
        this.absorb(file, { objects: [], invalid: [], ignored: [] });
        continue;
      }
      try {
        this.absorb(file, loadFile(file));
      } catch (e) {
        this.opts.logger.error('manifest not reloaded, keeping its previous objects', { error: e });
      }
    }
  }

  /**
   * Replaces the objects of `file` with `loaded`, emitting upserts for new or changed objects and
   * deletes for objects no file defines any more. An object several files define is the one of
   * the file read last; when that file drops it, another file's definition takes over.
   */
  private absorb(file: string, loaded: LoadedFile): void {
    const emit = this.onEvent;
    if (emit === null) return;
    const before = this.byFile.get(file) ?? new Map<string, Held>();
    const now = new Map<string, Held>();
    for (const s of loaded.invalid) {
      const last = s.key === null ? undefined : before.get(s.key);
      this.opts.logger.warn(last === undefined ? 'skipping invalid object' : 'invalid object, keeping its last good version', { file: s.file, where: s.where, object: s.key ?? '(unnamed)', field: s.error?.field, problem: s.error?.problem });
      if (last !== undefined) now.set(s.key!, last);
    }
    for (const s of loaded.ignored) this.opts.logger.info('ignoring object', { file: s.file, where: s.where, object: s.key ?? '(unnamed)', reason: s.reason });
    for (const obj of loaded.objects) {
      const key = objectKey(obj);
      const other = now.has(key) ? file : this.definedElsewhere(key, file);
      if (other !== undefined) this.opts.logger.warn('object defined twice, the later definition wins', { object: key, file, previous: other });
      now.set(key, { file, object: obj, json: JSON.stringify(obj) });
    }
    if (now.size > 0) this.byFile.set(file, now);
    else this.byFile.delete(file);
    for (const key of new Set([...before.keys(), ...now.keys()])) {
      const winner = now.get(key) ?? this.findElsewhere(key, file);
      const current = this.held.get(key);
      if (winner === undefined) {
        if (current !== undefined) {
          this.held.delete(key);
          emit({ type: 'delete', kind: current.object.kind, key });
        }
      } else if (current === undefined || current.json !== winner.json) {
        this.held.set(key, winner);
        emit({ type: 'upsert', object: winner.object });
      } else {
        this.held.set(key, winner);
      }
    }
  }

  private findElsewhere(key: string, file: string): Held | undefined {
    for (const [f, objs] of this.byFile) {
      if (f === file) continue;
      const h = objs.get(key);
      if (h !== undefined) return h;
    }
    return undefined;
  }

  private definedElsewhere(key: string, file: string): string | undefined {
    return this.findElsewhere(key, file)?.file;
  }
}

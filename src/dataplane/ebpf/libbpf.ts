// libbpf and the few libc calls the eBPF data plane needs, through koffi over the system's
// libbpf.so.1 (Debian's libbpf1, 1.1). This is the only module that sees raw pointers: objects,
// maps, programs and links are wrapped in classes that hold them, everything else passes file
// descriptors and Buffers. Every failure becomes a DataPlaneError whose message names the call,
// the object and the errno (ENOENT, EPERM, ...); a verifier rejection carries the verifier log in
// `detail`.
//
// Why koffi rather than an N-API addon: no compiler toolchain at install time, and libbpf's
// low-level API (fd + key/value buffers) maps one to one onto Buffers. A map operation costs one
// FFI call plus the syscall (about 1.2 us measured here), so hot paths batch.

import { openSync } from 'node:fs';
import { constants } from 'node:os';
import koffi from 'koffi';
import { DataPlaneError } from '../dataplane.js';

type Ptr = unknown;

const ERRNO_NAMES = new Map<number, string>(Object.entries(constants.errno).map(([k, v]) => [v, k]));

/** "ENOENT" for 2; "errno 1234" for what Node does not name. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(Math.abs(errno)) ?? `errno ${Math.abs(errno)}`;
}

let lib: ReturnType<typeof bind> | undefined;

function bind() {
  const bpf = koffi.load('libbpf.so.1');
  const libc = koffi.load('libc.so.6');
  const OpenOpts = koffi.struct('rd_bpf_object_open_opts', {
    sz: 'size_t', object_name: 'const char *', relaxed_maps: 'bool', pin_root_path: 'const char *',
    _attach_prog_fd: 'uint32', kconfig: 'const char *', btf_custom_path: 'const char *',
    kernel_log_buf: 'void *', kernel_log_size: 'size_t', kernel_log_level: 'uint32',
  });
  const BatchOpts = koffi.struct('rd_bpf_map_batch_opts', { sz: 'size_t', elem_flags: 'uint64', flags: 'uint64' });
  // struct bpf_tc_hook and struct bpf_tc_opts (libbpf.h), trailing `size_t :0` as padding.
  const TcHook = koffi.struct('rd_bpf_tc_hook', { sz: 'size_t', ifindex: 'int', attach_point: 'int', parent: 'uint32', _pad: 'uint32' });
  const TcOpts = koffi.struct('rd_bpf_tc_opts', { sz: 'size_t', prog_fd: 'int', flags: 'uint32', prog_id: 'uint32', handle: 'uint32', priority: 'uint32', _pad: 'uint32' });
  const TestRunOpts = koffi.struct('rd_bpf_test_run_opts', {
    sz: 'size_t', data_in: 'void *', data_out: 'void *', data_size_in: 'uint32', data_size_out: 'uint32',
    ctx_in: 'void *', ctx_out: 'void *', ctx_size_in: 'uint32', ctx_size_out: 'uint32',
    retval: 'uint32', repeat: 'int', duration: 'uint32', flags: 'uint32', cpu: 'uint32', batch_size: 'uint32',
  });
  return {
    OpenOpts,
    BatchOpts,
    TestRunOpts,
    progTestRun: bpf.func('int bpf_prog_test_run_opts(int prog_fd, _Inout_ rd_bpf_test_run_opts *opts)'),
    TcHook,
    TcOpts,
    tcHookCreate: bpf.func('int bpf_tc_hook_create(rd_bpf_tc_hook *hook)'),
    tcAttach: bpf.func('int bpf_tc_attach(const rd_bpf_tc_hook *hook, _Inout_ rd_bpf_tc_opts *opts)'),
    tcDetach: bpf.func('int bpf_tc_detach(const rd_bpf_tc_hook *hook, const rd_bpf_tc_opts *opts)'),
    tcQuery: bpf.func('int bpf_tc_query(const rd_bpf_tc_hook *hook, _Inout_ rd_bpf_tc_opts *opts)'),
    ifNameToIndex: libc.func('uint32 if_nametoindex(const char *name)'),
    openFile: bpf.func('void *bpf_object__open_file(const char *path, const rd_bpf_object_open_opts *opts)'),
    objLoad: bpf.func('int bpf_object__load(void *obj)'),
    objClose: bpf.func('void bpf_object__close(void *obj)'),
    findMap: bpf.func('void *bpf_object__find_map_by_name(void *obj, const char *name)'),
    findProg: bpf.func('void *bpf_object__find_program_by_name(void *obj, const char *name)'),
    mapSetMaxEntries: bpf.func('int bpf_map__set_max_entries(void *map, uint32 max)'),
    mapSetValueSize: bpf.func('int bpf_map__set_value_size(void *map, uint32 size)'),
    mapSetInitialValue: bpf.func('int bpf_map__set_initial_value(void *map, const void *data, size_t size)'),
    mapSetPinPath: bpf.func('int bpf_map__set_pin_path(void *map, const char *path)'),
    mapFd: bpf.func('int bpf_map__fd(void *map)'),
    mapMaxEntries: bpf.func('uint32 bpf_map__max_entries(void *map)'),
    mapValueSize: bpf.func('uint32 bpf_map__value_size(void *map)'),
    mapKeySize: bpf.func('uint32 bpf_map__key_size(void *map)'),
    mapType: bpf.func('int bpf_map__type(void *map)'),
    progFd: bpf.func('int bpf_program__fd(void *prog)'),
    attachCgroup: bpf.func('void *bpf_program__attach_cgroup(void *prog, int cgroup_fd)'),
    attachIter: bpf.func('void *bpf_program__attach_iter(void *prog, void *opts)'),
    linkFd: bpf.func('int bpf_link__fd(void *link)'),
    linkPin: bpf.func('int bpf_link__pin(void *link, const char *path)'),
    linkDisconnect: bpf.func('void bpf_link__disconnect(void *link)'),
    linkDestroy: bpf.func('int bpf_link__destroy(void *link)'),
    linkUpdate: bpf.func('int bpf_link_update(int link_fd, int new_prog_fd, void *opts)'),
    iterCreate: bpf.func('int bpf_iter_create(int link_fd)'),
    objGet: bpf.func('int bpf_obj_get(const char *path)'),
    objPin: bpf.func('int bpf_obj_pin(int fd, const char *path)'),
    objGetInfo: bpf.func('int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32 *len)'),
    update: bpf.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64 flags)'),
    lookup: bpf.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
    del: bpf.func('int bpf_map_delete_elem(int fd, const void *key)'),
    nextKey: bpf.func('int bpf_map_get_next_key(int fd, const void *key, void *next_key)'),
    updateBatch: bpf.func('int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32 *count, const rd_bpf_map_batch_opts *opts)'),
    deleteBatch: bpf.func('int bpf_map_delete_batch(int fd, const void *keys, _Inout_ uint32 *count, const rd_bpf_map_batch_opts *opts)'),
    lookupBatch: bpf.func('int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32 *count, const rd_bpf_map_batch_opts *opts)'),
    socket: libc.func('int socket(int domain, int type, int protocol)'),
    getsockopt: libc.func('int getsockopt(int fd, int level, int name, void *val, _Inout_ uint32 *len)'),
    setns: libc.func('int setns(int fd, int nstype)'),
    close: libc.func('int close(int fd)'),
  };
}

function L(): ReturnType<typeof bind> {
  if (lib === undefined) {
    try {
      lib = bind();
    } catch (e) {
      throw new DataPlaneError('EUNSUPPORTED', `cannot load libbpf.so.1 (install libbpf1): ${(e as Error).message}`);
    }
  }
  return lib;
}

/** Whether libbpf can be loaded at all (for a one-line fallback reason). */
export function libbpfAvailable(): string | null {
  try {
    L();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

function fail(code: DataPlaneError['code'], what: string, errno: number, detail?: string): never {
  throw new DataPlaneError(code, `${what}: ${errnoName(errno)}`, detail);
}

/** libbpf's int results are -errno; its pointer results are NULL with errno set. */
function check(code: DataPlaneError['code'], what: string, rc: number): number {
  if (rc < 0) fail(code, what, -rc);
  return rc;
}

function checkPtr(code: DataPlaneError['code'], what: string, p: Ptr): Ptr {
  if (p === null) fail(code, what, koffi.errno() || 22);
  return p;
}

/** Before load: what may still change about a map. */
export interface MapSpec {
  readonly name: string;
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  setMaxEntries(n: number): void;
  setValueSize(n: number): void;
  setInitialValue(data: Buffer): void;
}

export interface OpenOptions {
  /** Maps marked LIBBPF_PIN_BY_NAME are pinned (or adopted) in this bpffs directory. */
  pinRoot?: string;
  /** Called between open and load: size maps, set read-only data. */
  configure?: (maps: (name: string) => MapSpec) => void;
}

const LOG_SIZE = 4 << 20;

class InterruptedLoad extends Error {
  constructor(readonly error: DataPlaneError) {
    super(error.message);
  }
}

/** A loaded BPF object: its maps and programs by name. close() releases what is not pinned. */
export class BpfObject {
  private closed = false;

  private constructor(private readonly obj: Ptr, readonly path: string) {}

  /**
   * Opens, configures and loads an object file. The verifier gives up with EAGAIN when a signal
   * arrives while it works (a profiler's SIGPROF, say): that is retried a few times. Throws
   * DataPlaneError EINIT (with the verifier log on rejection).
   */
  static load(path: string, opts: OpenOptions = {}): BpfObject {
    for (let attempt = 1; ; attempt++) {
      try {
        return BpfObject.loadOnce(path, opts);
      } catch (e) {
        if (!(e instanceof InterruptedLoad) || attempt >= 5) throw e instanceof InterruptedLoad ? e.error : e;
      }
    }
  }

  private static loadOnce(path: string, opts: OpenOptions): BpfObject {
    const l = L();
    const logBuf = koffi.alloc('char', LOG_SIZE);
    try {
      const o = {
        sz: koffi.sizeof(l.OpenOpts), object_name: null, relaxed_maps: false, pin_root_path: opts.pinRoot ?? null,
        _attach_prog_fd: 0, kconfig: null, btf_custom_path: null, kernel_log_buf: logBuf, kernel_log_size: LOG_SIZE, kernel_log_level: 0,
      };
      const obj = checkPtr('EINIT', `open ${path}`, l.openFile(path, o));
      const self = new BpfObject(obj, path);
      try {
        opts.configure?.((name) => self.spec(name));
        const rc = l.objLoad(obj);
        if (rc === -11) throw new InterruptedLoad(new DataPlaneError('EINIT', `load ${path}: ${errnoName(11)} (interrupted)`));
        if (rc < 0) {
          const log = (koffi.decode(logBuf, 'char', LOG_SIZE) as string).replace(/\0.*$/s, '');
          fail('EINIT', `load ${path}${log ? ' (verifier rejected a program)' : ''}`, -rc, log.slice(-16_000) || undefined);
        }
      } catch (e) {
        self.close();
        throw e;
      }
      return self;
    } finally {
      koffi.free(logBuf);
    }
  }

  private map(name: string): Ptr {
    this.alive();
    return checkPtr('EINIT', `${this.path}: no map ${name}`, L().findMap(this.obj, name));
  }

  private prog(name: string): Ptr {
    this.alive();
    return checkPtr('EINIT', `${this.path}: no program ${name}`, L().findProg(this.obj, name));
  }

  private spec(name: string): MapSpec {
    const l = L();
    const m = this.map(name);
    const what = `${this.path}: map ${name}`;
    return {
      name,
      type: l.mapType(m),
      keySize: l.mapKeySize(m),
      valueSize: l.mapValueSize(m),
      maxEntries: l.mapMaxEntries(m),
      setMaxEntries: (n) => { check('EINIT', `${what}: max_entries ${n}`, l.mapSetMaxEntries(m, n)); },
      setValueSize: (n) => { check('EINIT', `${what}: value size ${n}`, l.mapSetValueSize(m, n)); },
      setInitialValue: (data) => { check('EINIT', `${what}: initial value`, l.mapSetInitialValue(m, data, data.length)); },
    };
  }

  /** The fd of a loaded map (owned by the object: valid until close). */
  mapFd(name: string): number {
    return check('EINIT', `${this.path}: map ${name} fd`, L().mapFd(this.map(name)));
  }

  progFd(name: string): number {
    return check('EINIT', `${this.path}: program ${name} fd`, L().progFd(this.prog(name)));
  }

  /** Attaches a cgroup program (cgroup/connect4, ...) through a BPF link. */
  attachCgroup(prog: string, cgroupFd: number): BpfLink {
    return new BpfLink(checkPtr('EAPPLY', `attach ${prog} to cgroup`, L().attachCgroup(this.prog(prog), cgroupFd)), prog);
  }

  /** Attaches an iterator program; read it with readIter(link.fd). */
  attachIter(prog: string): BpfLink {
    return new BpfLink(checkPtr('EAPPLY', `attach iterator ${prog}`, L().attachIter(this.prog(prog), null)), prog);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    L().objClose(this.obj);
  }

  private alive(): void {
    if (this.closed) throw new DataPlaneError('EINIT', `${this.path} is closed`);
  }
}

/** A BPF link. Pinned links outlive the process; disconnect() keeps the attachment when the link is destroyed. */
export class BpfLink {
  private gone = false;
  constructor(private readonly link: Ptr, readonly label: string) {}

  get fd(): number {
    return L().linkFd(this.link);
  }

  pin(path: string): void {
    check('EAPPLY', `pin link ${this.label} at ${path}`, L().linkPin(this.link, path));
  }

  /** Frees the link object; unless disconnect() was called (or it is pinned), that detaches the program. */
  destroy(disconnect = false): void {
    if (this.gone) return;
    this.gone = true;
    if (disconnect) L().linkDisconnect(this.link);
    L().linkDestroy(this.link);
  }
}

/** Opens a pinned object (map, link, program). Throws DataPlaneError with ENOENT when nothing is pinned there. */
export function objGet(path: string): number {
  return check('EREAD', `open pinned ${path}`, L().objGet(path));
}

export function objPin(fd: number, path: string): void {
  check('EAPPLY', `pin ${path}`, L().objPin(fd, path));
}

export function closeFd(fd: number): void {
  L().close(fd);
}

/** struct bpf_map_info (uapi/linux/bpf.h): the fields compared when adopting a pinned map. */
export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export function mapInfo(fd: number): MapInfo {
  const buf = Buffer.alloc(88);
  const len = [buf.length];
  check('EREAD', 'map info', L().objGetInfo(fd, buf, len));
  return { type: buf.readUInt32LE(0), id: buf.readUInt32LE(4), keySize: buf.readUInt32LE(8), valueSize: buf.readUInt32LE(12), maxEntries: buf.readUInt32LE(16), flags: buf.readUInt32LE(20) };
}

/**
 * struct bpf_link_info: type, id, prog_id, and for cgroup links (type 3) the cgroup id, the
 * first member of the union at offset 16.
 */
export function linkInfo(fd: number): { type: number; id: number; progId: number; cgroupId: bigint } {
  const buf = Buffer.alloc(64);
  const len = [buf.length];
  check('EREAD', 'link info', L().objGetInfo(fd, buf, len));
  const type = buf.readUInt32LE(0);
  return { type, id: buf.readUInt32LE(4), progId: buf.readUInt32LE(8), cgroupId: type === 3 ? buf.readBigUInt64LE(16) : 0n };
}

/** Atomically replaces the program behind a link: the hook never runs without a program. */
export function linkUpdate(linkFd: number, progFd: number, what: string): void {
  check('EAPPLY', `replace program of ${what}`, L().linkUpdate(linkFd, progFd, null));
}

// ---- tc (clsact) filters ------------------------------------------------------------------

export const TC_INGRESS = 1;
export const TC_EGRESS = 2;
const BPF_TC_F_REPLACE = 1;

const tcHook = (ifindex: number, point: number) => ({ sz: 24, ifindex, attach_point: point, parent: 0, _pad: 0 });
const tcOpts = (handle: number, priority: number, progFd = 0, flags = 0) => ({ sz: 32, prog_fd: progFd, flags, prog_id: 0, handle, priority, _pad: 0 });

/** The interface's index in this process's network namespace. Throws DataPlaneError EINIT if it has none. */
export function ifIndex(name: string): number {
  const i = L().ifNameToIndex(name) as number;
  if (i === 0) fail('EINIT', `interface ${JSON.stringify(name)}`, koffi.errno() || 19);
  return i;
}

/**
 * Attaches (or atomically replaces) the direct-action filter (handle, priority) on an
 * interface's clsact ingress or egress, creating the clsact qdisc if it is missing: a filter
 * left by an earlier agent is swapped, never removed first. Throws DataPlaneError EINIT.
 */
export function tcAttach(ifindex: number, point: number, progFd: number, handle: number, priority: number, what: string): void {
  const l = L();
  const hook = tcHook(ifindex, point);
  const rc = l.tcHookCreate(hook) as number;
  if (rc < 0 && -rc !== constants.errno.EEXIST) fail('EINIT', `create clsact on ${what}`, -rc);
  check('EINIT', `attach tc filter on ${what}`, l.tcAttach(hook, tcOpts(handle, priority, progFd, BPF_TC_F_REPLACE)) as number);
}

/** Detaches the filter (handle, priority); false if it was not there. Throws DataPlaneError ECLEANUP. */
export function tcDetach(ifindex: number, point: number, handle: number, priority: number, what: string): boolean {
  const rc = L().tcDetach(tcHook(ifindex, point), tcOpts(handle, priority)) as number;
  if (rc === -constants.errno.ENOENT || rc === -constants.errno.EINVAL || rc === -constants.errno.ENODEV) return false;
  check('ECLEANUP', `detach tc filter on ${what}`, rc);
  return true;
}

/** The id of the program in filter (handle, priority), or null when there is none. */
export function tcQuery(ifindex: number, point: number, handle: number, priority: number): number | null {
  const opts = tcOpts(handle, priority);
  const rc = L().tcQuery(tcHook(ifindex, point), opts) as number;
  return rc < 0 ? null : opts.prog_id;
}

// ---- BPF_PROG_TEST_RUN -----------------------------------------------------------------------

export interface TestRunResult {
  /** The program's return value (TC_ACT_*, or the redirect's result). */
  retval: number;
  /** The packet as the program left it. */
  data: Buffer;
  /** The context (struct __sk_buff) as the program left it, when one was passed in. */
  ctx: Buffer | null;
}

/**
 * Runs a loaded program once on a packet (and optionally a context, e.g. a struct __sk_buff
 * with ingress_ifindex set) with BPF_PROG_TEST_RUN: the kernel's own code path on real maps, no
 * interface involved. Throws DataPlaneError EREAD.
 */
export function progTestRun(progFd: number, data: Buffer, ctx?: Buffer, what = 'program'): TestRunResult {
  const out = Buffer.alloc(data.length + 256);
  const ctxOut = ctx === undefined ? null : Buffer.alloc(ctx.length);
  const opts = {
    sz: 80, data_in: data, data_out: out, data_size_in: data.length, data_size_out: out.length,
    ctx_in: ctx ?? null, ctx_out: ctxOut, ctx_size_in: ctx?.length ?? 0, ctx_size_out: ctxOut?.length ?? 0,
    retval: 0, repeat: 1, duration: 0, flags: 0, cpu: 0, batch_size: 0,
  };
  check('EREAD', `test run of ${what}`, L().progTestRun(progFd, opts) as number);
  return { retval: opts.retval, data: out.subarray(0, opts.data_size_out), ctx: ctxOut === null ? null : ctxOut.subarray(0, opts.ctx_size_out) };
}

export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;

/** Map element operations on fds with caller-owned buffers (preallocated by the codecs). */
export const bpfMap = {
  update(fd: number, key: Buffer, value: Buffer, what: string): void {
    check('EAPPLY', `update ${what}`, L().update(fd, key, value, BPF_ANY));
  },
  /** False when the key is absent. */
  lookup(fd: number, key: Buffer, value: Buffer, what: string): boolean {
    const rc = L().lookup(fd, key, value);
    if (rc === -2) return false;
    check('EREAD', `lookup ${what}`, rc);
    return true;
  },
  /** False when the key was absent. */
  delete(fd: number, key: Buffer, what: string): boolean {
    const rc = L().del(fd, key);
    if (rc === -2) return false;
    check('EAPPLY', `delete ${what}`, rc);
    return true;
  },
  /** Writes the key after `key` (the first key when null) into `next`; false at the end. */
  nextKey(fd: number, key: Buffer | null, next: Buffer, what: string): boolean {
    const rc = L().nextKey(fd, key, next);
    if (rc === -2) return false;
    check('EREAD', `iterate ${what}`, rc);
    return true;
  },
  /**
   * Updates `count` entries packed in `keys`/`values` in one syscall. Returns false (nothing
   * thrown) when the kernel has no batch operations for this map type, so callers fall back.
   */
  updateBatch(fd: number, keys: Buffer, values: Buffer, count: number, what: string): boolean {
    if (count === 0) return true;
    const n = [count];
    const rc = L().updateBatch(fd, keys, values, n, { sz: 24, elem_flags: 0, flags: 0 });
    if (rc === -22 || rc === -95 || rc === -524) return false; // EINVAL/EOPNOTSUPP/ENOTSUPP: no batch ops here
    check('EAPPLY', `batch update ${what} (${n[0]} of ${count} written)`, rc);
    return true;
  },
  /**
   * Deletes `count` keys packed in `keys`, batched; keys that are absent are skipped. Falls back
   * to one syscall per key where the map type has no batch delete.
   */
  deleteBatch(fd: number, keys: Buffer, keySize: number, count: number, what: string): void {
    let i = 0;
    while (i < count) {
      const n = [count - i];
      const rc = L().deleteBatch(fd, keys.subarray(i * keySize), n, { sz: 24, elem_flags: 0, flags: 0 });
      if (rc === 0) return;
      if (rc === -2) {
        // n[0] keys went before the absent one: skip it and go on.
        i += n[0]! + 1;
        continue;
      }
      if (rc === -22 || rc === -95 || rc === -524) {
        for (; i < count; i++) bpfMap.delete(fd, keys.subarray(i * keySize, (i + 1) * keySize), what);
        return;
      }
      check('EAPPLY', `batch delete ${what}`, rc);
    }
  },
  /**
   * Reads up to `max` elements per syscall into `keys`/`values`, calling `each(count)` per chunk.
   * Returns false (having read nothing) when the map type has no batch lookup.
   */
  lookupBatch(fd: number, keys: Buffer, values: Buffer, max: number, tokenSize: number, each: (count: number) => void, what: string): boolean {
    let inTok: Buffer | null = null;
    let outTok: Buffer = Buffer.alloc(tokenSize);
    for (;;) {
      const n = [max];
      const rc: number = L().lookupBatch(fd, inTok, outTok, keys, values, n, { sz: 24, elem_flags: 0, flags: 0 });
      if (rc < 0 && rc !== -2) {
        if (inTok === null && (rc === -22 || rc === -95 || rc === -524)) return false;
        check('EREAD', `batch lookup ${what}`, rc);
      }
      if (n[0]! > 0) each(n[0]!);
      if (rc === -2) return true;
      const t: Buffer = inTok ?? Buffer.alloc(tokenSize);
      inTok = outTok;
      outTok = t;
    }
  },
};

/** The network namespace cookie of the calling thread's namespace (SO_NETNS_COOKIE). */
export function netnsCookie(): bigint {
  const l = L();
  const fd = l.socket(1 /* AF_UNIX */, 1 /* SOCK_STREAM */, 0);
  if (fd < 0) fail('EINIT', 'socket for SO_NETNS_COOKIE', koffi.errno());
  try {
    const buf = Buffer.alloc(8);
    const len = [8];
    if (l.getsockopt(fd, 1 /* SOL_SOCKET */, 71 /* SO_NETNS_COOKIE */, buf, len) < 0) fail('EINIT', 'getsockopt SO_NETNS_COOKIE', koffi.errno());
    return buf.readBigUInt64LE(0);
  } finally {
    l.close(fd);
  }
}

const CLONE_NEWNET = 0x40000000;

/**
 * Runs fn with the calling thread in the network namespace `nsFd`, then moves it back. Only the
 * main thread moves (setns is per thread), and fn must be synchronous so no other JavaScript runs
 * in between. Throws DataPlaneError EAPPLY if a move fails.
 */
export function inNetns<T>(nsFd: number, fn: () => T): T {
  const l = L();
  const home = openSync('/proc/thread-self/ns/net', 'r');
  try {
    if (l.setns(nsFd, CLONE_NEWNET) < 0) fail('EAPPLY', 'setns into a pod network namespace', koffi.errno());
    try {
      return fn();
    } finally {
      if (l.setns(home, CLONE_NEWNET) < 0) fail('EAPPLY', 'setns back to the agent\'s network namespace', koffi.errno());
    }
  } finally {
    l.close(home);
  }
}


/** Creates an iterator instance from an iterator link and returns the fd to read it from. */
export function iterCreate(linkFd: number): number {
  return check('EAPPLY', 'create BPF iterator', L().iterCreate(linkFd));
}

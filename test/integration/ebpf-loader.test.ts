// The loader's errors on a real kernel: a program the verifier rejects comes back as
// DataPlaneError EINIT naming the errno, with the verifier's log; a missing object or pin names
// the path and ENOENT. The rejected program is compiled here from a few lines of C.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataPlaneError } from '../../src/dataplane/dataplane.js';
import { BpfObject, objGet } from '../../src/dataplane/ebpf/libbpf.js';
import { BPF_BUILD_DIR } from '../../src/dataplane/ebpf/programs.js';

const root = process.getuid?.() === 0;
const clang = ['clang-19', 'clang-16', 'clang'].find((c) => spawnSync(c, ['--version']).status === 0);

const BAD = `
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
struct { __uint(type, BPF_MAP_TYPE_HASH); __type(key, __u32); __type(value, __u32); __uint(max_entries, 1); } m SEC(".maps");
SEC("cgroup/connect4")
int bad(struct bpf_sock_addr *ctx) {
  __u32 k = 0;
  __u32 *v = bpf_map_lookup_elem(&m, &k);
  return *v ? 1 : 0; /* no NULL check: the verifier must refuse it */
}
`;

test('a program the verifier rejects: DataPlaneError EINIT with the errno and the verifier log', { skip: !root ? 'needs root' : clang === undefined ? 'no clang' : false }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'rudder-bad-bpf-'));
  try {
    writeFileSync(join(dir, 'bad.c'), BAD);
    const multiarch = spawnSync('gcc', ['-print-multiarch'], { encoding: 'utf8' }).stdout.trim() || 'x86_64-linux-gnu';
    const cc = spawnSync(clang!, ['-target', 'bpf', '-g', '-O2', '-I', BPF_BUILD_DIR, '-I', `/usr/include/${multiarch}`, '-c', join(dir, 'bad.c'), '-o', join(dir, 'bad.o')], { encoding: 'utf8' });
    assert.equal(cc.status, 0, cc.stderr);
    assert.throws(() => BpfObject.load(join(dir, 'bad.o')), (e: unknown) => {
      assert.ok(e instanceof DataPlaneError, String(e));
      assert.equal(e.code, 'EINIT');
      assert.match(e.message, /verifier rejected a program\): EACCES/);
      assert.match(e.detail ?? '', /invalid mem access 'map_value_or_null'/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a missing object or pin names the path and ENOENT', { skip: !root && 'needs root' }, () => {
  assert.throws(() => BpfObject.load('/nonexistent/rudder.o'), (e: unknown) => e instanceof DataPlaneError && e.code === 'EINIT' && /\/nonexistent\/rudder\.o: ENOENT/.test(e.message));
  assert.throws(() => objGet('/sys/fs/bpf/rudder-no-such-pin'), (e: unknown) => e instanceof DataPlaneError && /rudder-no-such-pin: ENOENT/.test(e.message));
});

// deploy/: the manifests and the image an operator applies, checked against the code they run:
// the agent's flags and config loader, the API calls the kubernetes source makes, the entry
// point and the kernel tools scripts/setup.sh installs. Nothing here talks to a cluster or builds
// the image; every failure names the file and the field to fix.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { AGENT_FLAGS, agentSettings } from '../../src/cli/agent.js';
import { loadAgentConfig } from '../../src/cli/agent-config.js';
import { parseArgs } from '../../src/cli/args.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = Record<string, any>;

/** The repository root: the nearest directory above this file with package.json (src or dist). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) || !existsSync(join(dir, 'deploy'))) {
    const up = dirname(dir);
    assert.notEqual(up, dir, 'cannot find the repository root (package.json and deploy/) above this test');
    dir = up;
  }
  return dir;
}

const ROOT = repoRoot();
const MANIFEST = 'deploy/rudder.yaml';
const DOCKERFILE = 'deploy/Dockerfile';
const NODE_NAME = 'node-test-1';

function loadManifest(): Obj[] {
  const text = readFileSync(join(ROOT, MANIFEST), 'utf8');
  const docs = parseAllDocuments(text);
  assert.ok(Array.isArray(docs), `${MANIFEST}: not a YAML stream`);
  const out: Obj[] = [];
  docs.forEach((d, i) => {
    assert.deepEqual(d.errors.map((e) => e.message), [], `${MANIFEST}: document ${i + 1} is not valid YAML`);
    const o: unknown = d.toJS();
    if (o === null || o === undefined) return; // an empty document (comments only)
    assert.ok(typeof o === 'object' && !Array.isArray(o), `${MANIFEST}: document ${i + 1} is not a mapping`);
    const obj = o as Obj;
    assert.ok(typeof obj['apiVersion'] === 'string' && typeof obj['kind'] === 'string', `${MANIFEST}: document ${i + 1} lacks apiVersion or kind`);
    assert.ok(typeof obj['metadata']?.name === 'string', `${MANIFEST}: ${obj['kind']} (document ${i + 1}) has no metadata.name`);
    out.push(obj);
  });
  return out;
}

const DOCS = loadManifest();

function only(kind: string): Obj {
  const found = DOCS.filter((d) => d['kind'] === kind);
  assert.equal(found.length, 1, `${MANIFEST}: expected exactly one ${kind}, found ${found.length}`);
  return found[0]!;
}

const daemonSet = (): Obj => only('DaemonSet');
const podSpec = (): Obj => daemonSet()['spec']['template']['spec'];

function agentContainer(): Obj {
  const cs: Obj[] = podSpec()['containers'] ?? [];
  assert.equal(cs.length, 1, `${MANIFEST}: DaemonSet: expected one container, found ${cs.length}`);
  return cs[0]!;
}

/** The container's arguments after the image's entrypoint, "agent" first. */
function agentArgs(): string[] {
  const c = agentContainer();
  assert.equal(c['command'], undefined, `${MANIFEST}: DaemonSet container: set args, not command (command would replace the image's ENTRYPOINT)`);
  const args: unknown = c['args'];
  assert.ok(Array.isArray(args) && args.every((a) => typeof a === 'string'), `${MANIFEST}: DaemonSet container: args must be a list of strings`);
  assert.equal(args[0], 'agent', `${MANIFEST}: DaemonSet container: args[0] must be the "agent" command, got ${JSON.stringify(args[0])}`);
  return args.slice(1) as string[];
}

/** Kubernetes' $(VAR) expansion for the variables the test knows. */
function expand(args: string[]): string[] {
  return args.map((a) => a.replace(/\$\((\w+)\)/g, (m, v: string) => {
    assert.equal(v, 'NODE_NAME', `${MANIFEST}: DaemonSet container: args use $(${v}), which this test does not know how to expand`);
    return NODE_NAME;
  }));
}

function flagValue(args: string[], flag: string): string | undefined {
  const p = parseArgs(args, AGENT_FLAGS);
  const v = p.flags.get(flag);
  return v?.[v.length - 1];
}

function configMap(): Obj {
  return only('ConfigMap');
}

/** The mounted ConfigMap's config file: its key and text. */
function configFile(): { key: string; text: string } {
  const cfgPath = flagValue(agentArgs(), 'config');
  assert.ok(cfgPath !== undefined, `${MANIFEST}: DaemonSet container: args lack --config`);
  const key = posix.basename(cfgPath);
  const text: unknown = configMap()['data']?.[key];
  assert.equal(typeof text, 'string', `${MANIFEST}: ConfigMap ${configMap()['metadata'].name}: data has no key ${JSON.stringify(key)}, the file --config ${cfgPath} names`);
  return { key, text: text as string };
}

/** Writes the config file to a temp dir and runs fn with its path. */
function withConfigFile<T>(fn: (path: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'rudder-deploy-'));
  try {
    const { key, text } = configFile();
    const path = join(dir, key);
    writeFileSync(path, text);
    return fn(path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function healthzPort(): number {
  const cfg = withConfigFile((p) => loadAgentConfig(p));
  const addr = flagValue(expand(agentArgs()), 'healthz-bind-address') ?? cfg.healthzBindAddress;
  assert.ok(addr !== undefined && addr !== '', `${MANIFEST}: no healthz address set (ConfigMap healthzBindAddress or --healthz-bind-address); the default 127.0.0.1 is unreachable for the kubelet's probes`);
  const m = /:(\d+)$/.exec(addr);
  assert.ok(m, `${MANIFEST}: healthz address ${JSON.stringify(addr)} has no port`);
  return Number(m[1]);
}

test('every document of deploy/rudder.yaml parses and names its kind', () => {
  const kinds = DOCS.map((d) => d['kind']).sort();
  assert.deepEqual(kinds, ['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'ServiceAccount'],
    `${MANIFEST}: unexpected set of objects`);
  for (const d of DOCS) {
    if (d['kind'] === 'ClusterRole' || d['kind'] === 'ClusterRoleBinding') continue;
    assert.equal(d['metadata'].namespace, 'kube-system', `${MANIFEST}: ${d['kind']} ${d['metadata'].name}: metadata.namespace must be kube-system`);
  }
});

test('every flag in the DaemonSet args exists in AGENT_FLAGS', () => {
  const args = agentArgs();
  for (const a of args) {
    if (!a.startsWith('-')) continue;
    const name = a.startsWith('--') ? a.slice(2).split('=')[0]! : a.slice(1);
    const known = a.startsWith('--') ? name in AGENT_FLAGS : Object.values(AGENT_FLAGS).some((s) => s.alias === name);
    assert.ok(known, `${MANIFEST}: DaemonSet container: ${a} is not a flag of rudder agent (see AGENT_FLAGS in src/cli/agent.ts)`);
  }
  const p = parseArgs(expand(args), AGENT_FLAGS);
  assert.deepEqual(p.positional, [], `${MANIFEST}: DaemonSet container: stray words in args: ${p.positional.join(' ')}`);
  assert.equal(p.flags.get('node')?.[0], NODE_NAME, `${MANIFEST}: DaemonSet container: --node must be $(NODE_NAME)`);
  assert.equal(p.flags.get('in-cluster')?.[0], 'true', `${MANIFEST}: DaemonSet container: --in-cluster is required (the pod's service account)`);
});

test('NODE_NAME comes from the downward API (spec.nodeName)', () => {
  const env: Obj[] = agentContainer()['env'] ?? [];
  const v = env.find((e) => e['name'] === 'NODE_NAME');
  assert.ok(v, `${MANIFEST}: DaemonSet container: env has no NODE_NAME, which args use`);
  assert.equal(v['valueFrom']?.fieldRef?.fieldPath, 'spec.nodeName', `${MANIFEST}: DaemonSet container: env NODE_NAME must be valueFrom.fieldRef.fieldPath spec.nodeName`);
  for (const e of env) {
    const ref = e['valueFrom']?.configMapKeyRef;
    if (ref === undefined) continue;
    assert.equal(ref['name'], configMap()['metadata'].name, `${MANIFEST}: DaemonSet container: env ${e['name']} reads ConfigMap ${ref['name']}, which this file does not define`);
    if (ref['optional'] !== true) assert.ok(ref['key'] in (configMap()['data'] ?? {}), `${MANIFEST}: DaemonSet container: env ${e['name']} needs key ${ref['key']} of the ConfigMap, which is missing (or mark it optional)`);
  }
});

test('the ConfigMap holds a KubeProxyConfiguration that loadAgentConfig accepts', () => {
  const cfg = withConfigFile((p) => loadAgentConfig(p));
  assert.equal(cfg.dataplane, 'iptables', `${MANIFEST}: ConfigMap config: mode must be iptables (the only data plane built)`);
  assert.ok((cfg.clusterCIDRs ?? []).length > 0, `${MANIFEST}: ConfigMap config: clusterCIDR is required (masquerade of off-cluster traffic to ClusterIPs)`);
  assert.equal(cfg.healthzBindAddress, '0.0.0.0:10256', `${MANIFEST}: ConfigMap config: healthzBindAddress must be 0.0.0.0:10256 so the kubelet's probes reach it on the node IP`);
  assert.equal(cfg.metricsBindAddress, '127.0.0.1:10249', `${MANIFEST}: ConfigMap config: metricsBindAddress must stay on loopback (it also serves /services and /table)`);
});

test('agentSettings accepts the DaemonSet args as written', () => {
  withConfigFile((cfgPath) => {
    // The file the pod would read at /etc/rudder/..., here the same text in a temp file.
    const args = expand(agentArgs()).map((a, i, all) => (all[i - 1] === '--config' ? cfgPath : a.startsWith('--config=') ? `--config=${cfgPath}` : a));
    const s = agentSettings(parseArgs(args, AGENT_FLAGS));
    assert.equal(s.inCluster, true, 'agentSettings: inCluster');
    assert.equal(s.kubeconfig, undefined, 'agentSettings: a kubeconfig as well as --in-cluster');
    assert.deepEqual(s.manifests, [], 'agentSettings: manifests as well as --in-cluster');
    assert.equal(s.flags.nodeName, NODE_NAME, 'agentSettings: the node name must come from --node $(NODE_NAME)');
    assert.equal(s.dataplane, 'iptables', 'agentSettings: dataplane');
    assert.ok(s.flags.clusterCIDRs.length > 0, 'agentSettings: clusterCIDR from the ConfigMap did not reach the flags');
    assert.equal(s.healthz, '0.0.0.0:10256', 'agentSettings: healthz address');
    assert.equal(s.metrics, '127.0.0.1:10249', 'agentSettings: metrics address');
  });
});

test('the ClusterRole grants exactly list and watch on services, endpointslices and nodes', () => {
  const role = only('ClusterRole');
  // What src/source/kubernetes.ts lists and watches, by API group. It never GETs one object (its
  // Node comes from a list narrowed by fieldSelector) and writes nothing, so no other verb.
  const want = new Map([['/services', ['list', 'watch']], ['/nodes', ['list', 'watch']], ['discovery.k8s.io/endpointslices', ['list', 'watch']]]);
  const got = new Map<string, string[]>();
  for (const [i, r] of (role['rules'] as Obj[]).entries()) {
    const where = `${MANIFEST}: ClusterRole ${role['metadata'].name}: rules[${i}]`;
    for (const field of ['apiGroups', 'resources', 'verbs']) {
      assert.ok(Array.isArray(r[field]) && r[field].length > 0, `${where}.${field} must be a non-empty list`);
      assert.ok(!r[field].includes('*'), `${where}.${field}: no wildcard`);
    }
    assert.equal(r['resourceNames'], undefined, `${where}: resourceNames would block list/watch`);
    assert.equal(r['nonResourceURLs'], undefined, `${where}: nonResourceURLs are not needed`);
    for (const g of r['apiGroups'] as string[]) {
      for (const res of r['resources'] as string[]) {
        const key = `${g}/${res}`;
        assert.ok(want.has(key), `${where}: grants ${res} in API group ${JSON.stringify(g)}, which the agent does not read`);
        got.set(key, [...new Set([...(got.get(key) ?? []), ...(r['verbs'] as string[])])].sort());
      }
    }
  }
  for (const [key, verbs] of want) {
    assert.deepEqual(got.get(key), verbs, `${MANIFEST}: ClusterRole: ${key} must have exactly the verbs ${verbs.join(', ')}`);
  }
});

test('the ClusterRoleBinding binds the ClusterRole to the ServiceAccount the DaemonSet uses', () => {
  const sa = only('ServiceAccount');
  const binding = only('ClusterRoleBinding');
  assert.deepEqual(binding['roleRef'], { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: only('ClusterRole')['metadata'].name },
    `${MANIFEST}: ClusterRoleBinding: roleRef must name the ClusterRole defined here`);
  assert.deepEqual(binding['subjects'], [{ kind: 'ServiceAccount', name: sa['metadata'].name, namespace: sa['metadata'].namespace }],
    `${MANIFEST}: ClusterRoleBinding: subjects must be exactly the ServiceAccount defined here`);
  assert.equal(podSpec()['serviceAccountName'], sa['metadata'].name, `${MANIFEST}: DaemonSet: serviceAccountName must be ${sa['metadata'].name}`);
  assert.equal(daemonSet()['metadata'].namespace, sa['metadata'].namespace, `${MANIFEST}: DaemonSet and ServiceAccount must share a namespace`);
});

test('the DaemonSet runs on every node in the host network', () => {
  const ds = daemonSet();
  const spec = podSpec();
  const where = `${MANIFEST}: DaemonSet ${ds['metadata'].name}`;
  assert.equal(spec['hostNetwork'], true, `${where}: hostNetwork must be true (the rules belong in the node's network namespace)`);
  assert.equal(spec['dnsPolicy'], 'Default', `${where}: dnsPolicy must be Default: cluster DNS is a Service the agent itself programs`);
  assert.equal(spec['priorityClassName'], 'system-node-critical', `${where}: priorityClassName must be system-node-critical`);
  assert.ok((spec['tolerations'] as Obj[] | undefined)?.some((t) => t['operator'] === 'Exists' && t['key'] === undefined && t['effect'] === undefined),
    `${where}: tolerations must include {operator: Exists} (every taint)`);
  assert.equal(ds['spec']['updateStrategy']?.type, 'RollingUpdate', `${where}: updateStrategy.type must be RollingUpdate`);
  assert.equal(ds['spec']['updateStrategy']?.rollingUpdate?.maxUnavailable, 1, `${where}: updateStrategy.rollingUpdate.maxUnavailable must be 1`);
  assert.equal(typeof spec['terminationGracePeriodSeconds'], 'number', `${where}: terminationGracePeriodSeconds must be set`);
  const labels = ds['spec']['template']['metadata']?.labels ?? {};
  for (const [k, v] of Object.entries(ds['spec']['selector']?.matchLabels ?? {})) {
    assert.equal(labels[k], v, `${where}: selector ${k}=${String(v)} does not match the pod template's labels`);
  }
  const c = agentContainer();
  assert.ok(c['resources']?.requests?.cpu && c['resources']?.requests?.memory, `${where}: resources.requests.cpu and .memory must be set`);
});

test('the DaemonSet mounts the ConfigMap where --config points, and the host paths the data planes use', () => {
  const spec = podSpec();
  const c = agentContainer();
  const where = `${MANIFEST}: DaemonSet container ${c['name']}`;
  const cfgPath = flagValue(agentArgs(), 'config')!;
  const mounts: Obj[] = c['volumeMounts'] ?? [];
  const volumes = new Map<string, Obj>((spec['volumes'] as Obj[] ?? []).map((v) => [v['name'], v]));
  const mountAt = (path: string): { m: Obj; v: Obj } => {
    const m = mounts.find((x) => x['mountPath'] === path);
    assert.ok(m, `${where}: nothing is mounted at ${path}`);
    const v = volumes.get(m['name']);
    assert.ok(v, `${where}: volumeMount ${m['name']} names no volume of the pod`);
    return { m, v };
  };

  const { m: cfgMount, v: cfgVol } = mountAt(posix.dirname(cfgPath));
  assert.equal(cfgVol['configMap']?.name, configMap()['metadata'].name, `${where}: ${cfgMount['mountPath']} must be the ConfigMap ${configMap()['metadata'].name}`);
  const items: Obj[] | undefined = cfgVol['configMap'].items;
  const fileKey = items === undefined ? posix.basename(cfgPath) : items.find((it) => it['path'] === posix.basename(cfgPath))?.['key'];
  assert.equal(fileKey, configFile().key, `${where}: the ConfigMap volume does not put key ${configFile().key} at ${cfgPath}`);

  const host = (path: string, type: string, opts: { readOnly?: boolean; propagation?: string } = {}): void => {
    const { m, v } = mountAt(path);
    assert.equal(v['hostPath']?.path, path, `${where}: ${path} must be the host's ${path} (hostPath)`);
    assert.equal(v['hostPath']?.type, type, `${where}: hostPath ${path} must have type ${type}`);
    if (opts.readOnly !== undefined) assert.equal(m['readOnly'] === true, opts.readOnly, `${where}: ${path} must be mounted ${opts.readOnly ? 'read-only' : 'read-write'}`);
    if (opts.propagation !== undefined) assert.equal(m['mountPropagation'], opts.propagation, `${where}: ${path} must have mountPropagation ${opts.propagation}`);
  };
  host('/run/xtables.lock', 'FileOrCreate', { readOnly: false });
  host('/lib/modules', 'Directory', { readOnly: true });
  host('/sys/fs/bpf', 'DirectoryOrCreate', { propagation: 'Bidirectional' });
  host('/sys/fs/cgroup', 'Directory');

  // The API server rejects Bidirectional propagation on an unprivileged container.
  if (mounts.some((m) => m['mountPropagation'] === 'Bidirectional')) {
    assert.equal(c['securityContext']?.privileged, true, `${where}: a Bidirectional mount needs securityContext.privileged: true`);
  }
  const caps: string[] = c['securityContext']?.capabilities?.add ?? [];
  for (const cap of ['NET_ADMIN', 'NET_RAW', 'SYS_ADMIN', 'BPF', 'PERFMON']) {
    assert.ok(caps.includes(cap), `${where}: securityContext.capabilities.add lacks ${cap}`);
  }
});

test('the probes hit /livez and /healthz on the healthzBindAddress port', () => {
  const c = agentContainer();
  const port = healthzPort();
  const ports = new Map<string, number>((c['ports'] as Obj[] ?? []).map((p) => [p['name'], p['containerPort']]));
  const probe = (field: string, path: string): void => {
    const p = c[field]?.httpGet;
    assert.ok(p, `${MANIFEST}: DaemonSet container: ${field}.httpGet is missing`);
    assert.equal(p['path'], path, `${MANIFEST}: DaemonSet container: ${field} must GET ${path}`);
    const n = typeof p['port'] === 'string' ? ports.get(p['port']) : p['port'];
    assert.equal(n, port, `${MANIFEST}: DaemonSet container: ${field} port ${String(p['port'])} is not the healthz port ${port}`);
    assert.equal(p['host'], undefined, `${MANIFEST}: DaemonSet container: ${field}.host must stay unset (the kubelet then probes the node IP)`);
  };
  probe('livenessProbe', '/livez');
  probe('readinessProbe', '/healthz');
  if (c['startupProbe'] !== undefined) probe('startupProbe', '/livez');
});

// --- Dockerfile ---------------------------------------------------------------------------------

interface Instruction { op: string; rest: string; stage: number }

function dockerfile(): Instruction[] {
  const text = readFileSync(join(ROOT, DOCKERFILE), 'utf8');
  const joined = text.split('\n').filter((l) => !/^\s*#/.test(l)).join('\n').replace(/\\\n/g, ' ');
  const out: Instruction[] = [];
  let stage = -1;
  for (const line of joined.split('\n')) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const op = m[1]!.toUpperCase();
    if (op === 'FROM') stage++;
    out.push({ op, rest: m[2]!.trim(), stage });
  }
  return out;
}

test('the Dockerfile builds on node:20-bookworm-slim and its ENTRYPOINT runs bin/rudder.js', () => {
  const ins = dockerfile();
  const froms = ins.filter((i) => i.op === 'FROM');
  assert.ok(froms.length >= 2, `${DOCKERFILE}: expected a build stage and a runtime stage`);
  for (const f of froms) assert.match(f.rest, /^node:20-bookworm-slim\b/, `${DOCKERFILE}: FROM ${f.rest}: every stage must be node:20-bookworm-slim`);
  const last = froms.length - 1;
  const runs = (stage: number): string => ins.filter((i) => i.stage === stage && i.op === 'RUN').map((i) => i.rest).join('\n');
  assert.match(runs(0), /npm ci\b/, `${DOCKERFILE}: the build stage must run npm ci`);
  assert.match(runs(0), /npx tsc\b/, `${DOCKERFILE}: the build stage must run npx tsc`);
  assert.match(runs(last), /npm ci\b[^\n]*--omit=dev/, `${DOCKERFILE}: the runtime stage must install production modules only (npm ci --omit=dev)`);

  const eps = ins.filter((i) => i.op === 'ENTRYPOINT');
  assert.equal(eps.length, 1, `${DOCKERFILE}: expected one ENTRYPOINT`);
  const ep: unknown = JSON.parse(eps[0]!.rest);
  assert.deepEqual(ep, ['node', '/app/bin/rudder.js'], `${DOCKERFILE}: ENTRYPOINT must be the exec form ["node","/app/bin/rudder.js"]`);

  // Where each path of the runtime image comes from, by Docker's COPY rules: a directory source
  // copies its contents to dest; a file goes to dest, or into it when dest ends in "/" or there
  // are several sources. Paths are relative to the stage's WORKDIR.
  const workdirOf = (stage: number): string => {
    let wd = '/';
    for (const i of ins) if (i.stage === stage && i.op === 'WORKDIR') wd = posix.resolve(wd, i.rest);
    return wd;
  };
  const stageNames = new Map<string, number>();
  froms.forEach((f, n) => { const a = /\s+AS\s+(\S+)$/i.exec(f.rest); if (a) stageNames.set(a[1]!, n); });
  let workdir = '/';
  const copies: { from: string | null; src: string; dest: string }[] = [];
  for (const i of ins.filter((x) => x.stage === last)) {
    if (i.op === 'WORKDIR') workdir = posix.resolve(workdir, i.rest);
    if (i.op !== 'COPY') continue;
    const words = i.rest.split(/\s+/);
    const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length) ?? null;
    const paths = words.filter((w) => !w.startsWith('--'));
    const rawDest = paths[paths.length - 1]!;
    const dest = posix.resolve(workdir, rawDest);
    const srcs = paths.slice(0, -1);
    for (const raw of srcs) {
      const src = raw.replace(/\/+$/, '');
      const isDir = raw.endsWith('/') || (from === null && existsSync(join(ROOT, src)) && statSync(join(ROOT, src)).isDirectory());
      const into = !isDir && (rawDest.endsWith('/') || srcs.length > 1);
      copies.unshift({ from, src, dest: into ? posix.join(dest, posix.basename(src)) : dest }); // later COPYs win
    }
  }
  /** The repository file (context copy) or other stage's path an image path comes from. */
  const origin = (imagePath: string): { from: string | null; path: string } | null => {
    for (const c of copies) {
      if (imagePath === c.dest || imagePath.startsWith(`${c.dest}/`)) return { from: c.from, path: posix.join(c.src, posix.relative(c.dest, imagePath)) };
    }
    return null;
  };

  const script = (ep as string[])[1]!;
  const scriptOrigin = origin(script);
  assert.ok(scriptOrigin && scriptOrigin.from === null, `${DOCKERFILE}: no COPY from the build context puts ${script} in the image`);
  const scriptFile = join(ROOT, scriptOrigin.path);
  assert.ok(existsSync(scriptFile), `${DOCKERFILE}: ENTRYPOINT runs ${script}, copied from ${scriptOrigin.path}, which does not exist in the repository`);
  assert.equal(scriptOrigin.path, 'bin/rudder.js', `${DOCKERFILE}: ENTRYPOINT must run the package's bin (bin/rudder.js), not ${scriptOrigin.path}`);

  // bin/rudder.js imports the compiled CLI: it must be in the image, compiled by the build stage.
  for (const m of readFileSync(scriptFile, 'utf8').matchAll(/from\s+'(\.[^']+)'/g)) {
    const target = posix.resolve(posix.dirname(script), m[1]!);
    const o = origin(target);
    assert.ok(o, `${DOCKERFILE}: bin/rudder.js imports ${m[1]}, but nothing copies ${target} into the image`);
    assert.ok(o.from !== null, `${DOCKERFILE}: ${target} must come from the build stage (COPY --from=...), not the build context`);
    const stage = stageNames.get(o.from) ?? Number(o.from);
    assert.ok(Number.isInteger(stage) && stage >= 0 && stage < last, `${DOCKERFILE}: COPY --from=${o.from} names no earlier stage`);
    // The build stage copies the repository to its WORKDIR and compiles there, so its path maps
    // back to the repository, where `npx tsc -p tsconfig.json` has produced the same layout.
    const rel = posix.relative(workdirOf(stage), o.path);
    assert.ok(!rel.startsWith('..'), `${DOCKERFILE}: ${o.path} is outside the build stage's WORKDIR ${workdirOf(stage)}`);
    assert.ok(existsSync(join(ROOT, rel)), `${DOCKERFILE}: ${target} would be the build stage's ${o.path}, but after tsc the repository has no ${rel} (does the tsconfig outDir/rootDir layout match?)`);
  }
  // "type": "module" comes from package.json; without it node would run bin/rudder.js as CommonJS.
  assert.ok(origin('/app/package.json')?.from === null, `${DOCKERFILE}: the runtime stage must copy package.json to /app (it makes bin/rudder.js an ES module)`);
});

test('the image installs the kernel tools scripts/setup.sh installs for the data planes', () => {
  const setup = readFileSync(join(ROOT, 'scripts/setup.sh'), 'utf8');
  const m = /^packages=\(([^)]*)\)/m.exec(setup);
  assert.ok(m, 'scripts/setup.sh: no packages=(...) list to compare the image with');
  // lab_packages (the lab's and the benchmark's tools) are not needed on a node.
  const needed = m[1]!.trim().split(/\s+/);
  for (const p of ['iptables', 'nftables', 'conntrack', 'iproute2']) assert.ok(needed.includes(p), `scripts/setup.sh no longer installs ${p}; update this test`);

  const ins = dockerfile();
  const last = Math.max(...ins.map((i) => i.stage));
  const apt = ins.filter((i) => i.stage === last && i.op === 'RUN' && /apt-get install/.test(i.rest));
  assert.equal(apt.length, 1, `${DOCKERFILE}: the runtime stage must run apt-get install once`);
  const cmd = apt[0]!.rest;
  const install = cmd.slice(cmd.indexOf('apt-get install')).split(/&&|;/)[0]!;
  const pkgs = install.split(/\s+/).slice(2).filter((w) => w !== '' && !w.startsWith('-'));
  for (const p of needed) assert.ok(pkgs.includes(p), `${DOCKERFILE}: apt-get install lacks ${p}, which scripts/setup.sh installs for the data planes (it has: ${pkgs.join(' ')})`);
  assert.match(install, /--no-install-recommends/, `${DOCKERFILE}: apt-get install must use --no-install-recommends`);
  assert.match(cmd, /apt-get update/, `${DOCKERFILE}: apt-get install needs apt-get update in the same RUN`);
  assert.match(cmd, /rm -rf \/var\/lib\/apt\/lists/, `${DOCKERFILE}: the apt lists must be removed in the same RUN`);
});

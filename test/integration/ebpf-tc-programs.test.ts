// The per-packet programs (bpf/tc_nodeport.c) as loaded in the kernel, run on hand-built frames
// with BPF_PROG_TEST_RUN: rd_from_netdev (tc ingress), rd_to_netdev (tc egress) and rd_from_pod
// (ingress of the pods' interfaces), on the pinned maps that the eBPF data plane fills from a
// service table as the agent does. Nothing is attached to an interface and a test run sends
// nothing; the socket programs that load the shared maps are attached to a scratch lab cgroup with
// no process in it. Checked: DNAT and SNAT with their connection-tracking entries, replies
// rewritten back to the frontend, TCP states and expiry, verdicts (refusal without endpoints,
// traffic policy Local, source ranges, strays), IPv6, affinity and Maglev. Every checksum is
// recomputed here from scratch. Root only.

import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { EbpfDataPlane } from '../../src/dataplane/ebpf/index.js';
import { bpfMap, progTestRun } from '../../src/dataplane/ebpf/libbpf.js';
import { sweepCt } from '../../src/dataplane/ebpf/ct.js';
import { AffExtKeyCodec, CtKeyCodec, CtValCodec, ctEndWindow, MARK_FORWARDED, type Knobs } from '../../src/dataplane/ebpf/codecs.js';
import { dumpRaw } from '../../src/dataplane/ebpf/maps.js';
import { DEFAULT_CT_TIMEOUTS, type CtTimeouts } from '../../src/dataplane/ebpf/defaults.js';
import { DEFAULT_MAP_SIZES, loadPerPacket, loadSocketLB, removePins, SOCK_LB_OBJECT, TC_OBJECT, type PerPacket, type SocketLB } from '../../src/dataplane/ebpf/programs.js';
import { build } from '../../src/model/build.js';
import { diff } from '../../src/model/diff.js';
import type { ProxyObject } from '../../src/source/objects.js';
import { LB_ALGORITHM_ANNOTATION } from '../../src/source/decode.js';
import { memoryLogger } from '../../src/observe/log.js';
import { config, decodeOk, rawService, service, slice, snapshotOf, type EpOpts } from '../support/fixtures.js';
import { createEbpfScratch, type EbpfScratch } from '../support/ebpf-scratch.js';
import { addrBytes, clearMap, ctKey, CT_F_SNAT, CT_STATE, dumpCt, MACS, mapKeys, onesSum, packet, parse, parseIcmp, PROTO, TC_ACT, TCP, type CtEntry, type Flow, type Parsed } from '../support/tc-packets.js';

const isRoot = process.getuid?.() === 0;
const missing = [SOCK_LB_OBJECT, TC_OBJECT].filter((p) => !existsSync(p));
const skip = !isRoot ? 'needs root' : missing.length > 0 ? `${missing.join(', ')} missing: run scripts/build-bpf.sh` : false;

const NODE = '198.18.0.2';
const NODE6 = 'fd00:198::2';
const CFG = config({ nodeIPs: [NODE, NODE6] });
const CLIENT = '198.18.0.100';
const CLIENT2 = '198.18.0.101';
const OUTSIDE = '203.0.113.7';
const CLIENT6 = '2001:db8::100';
const LOCAL = '10.244.1.10';
const REMOTE = '10.244.2.20';
const LOCAL6 = 'fd00:244::10';
const REMOTE6 = 'fd00:244:2::20';
const LB_IP = '198.18.1.5';
/** Not the default range, so a translated port inside it shows the knob reached the program. */
const SNAT: [number, number] = [50000, 50127];
const TINY_CT: CtTimeouts = { tcpSyn: 1, tcpEstablished: 3, tcpClosing: 1, udp: 2 };
const SIZES = { ...DEFAULT_MAP_SIZES, services: 4096, backends: 1024, sockets: 1024, affinity: 1024, maglevServices: 16, ct: 4096 };

const knobs = (ct: CtTimeouts, snatPorts: [number, number]): Knobs => ({ hostNetnsCookie: 0n, hostNamespaceOnly: false, maglevTableSize: SIZES.maglevTableSize, ct, snatPorts });

/** A NodePort service (ClusterIP `10.96.0.<n>`, port 80) on `nodePort` with endpoints on `targetPort`. */
function nodePortService(name: string, n: number, nodePort: number, proto: 'TCP' | 'UDP', targetPort: number, eps: EpOpts[], spec: Record<string, unknown> = {}): ProxyObject[] {
  return [
    service(name, { type: 'NodePort', clusterIP: `10.96.0.${n}`, ports: [{ name: 'p', port: 80, targetPort, nodePort, protocol: proto }], spec }),
    slice(`${name}-1`, name, eps, { ports: [{ name: 'p', port: targetPort, protocol: proto }] }),
  ];
}

function ipv6NodePort(name: string, n: number, nodePort: number, eps: EpOpts[]): ProxyObject[] {
  return [
    service(name, { type: 'NodePort', clusterIP: `fd00:96::${n}`, ports: [{ name: 'p', port: 80, targetPort: 8080, nodePort, protocol: 'TCP' }], spec: { ipFamilies: ['IPv6'], clusterIPs: [`fd00:96::${n}`] } }),
    slice(`${name}-1`, name, eps, { addressType: 'IPv6', ports: [{ name: 'p', port: 8080, protocol: 'TCP' }] }),
  ];
}

const four = (base: number): EpOpts[] => [0, 1, 2, 3].map((i) => ({ ip: `10.244.1.${base + i}`, node: 'node-1' }));

function maglevService(): ProxyObject[] {
  const raw = rawService('maglev', { type: 'NodePort', clusterIP: '10.96.0.19', ports: [{ name: 'p', port: 80, targetPort: 8080, nodePort: 30089, protocol: 'TCP' }] });
  (raw['metadata'] as Record<string, unknown>)['annotations'] = { [LB_ALGORITHM_ANNOTATION]: 'maglev' };
  return [decodeOk(raw), slice('maglev-1', 'maglev', four(40), { ports: [{ name: 'p', port: 8080, protocol: 'TCP' }] })];
}

const OBJECTS: ProxyObject[] = [
  ...nodePortService('local', 10, 30080, 'TCP', 8080, [{ ip: LOCAL, node: 'node-1' }]),
  ...nodePortService('local-udp', 11, 30053, 'UDP', 5300, [{ ip: LOCAL, node: 'node-1' }]),
  ...nodePortService('remote', 12, 30081, 'TCP', 8080, [{ ip: REMOTE, node: 'node-2' }]),
  ...nodePortService('remote-udp', 13, 30091, 'UDP', 5300, [{ ip: REMOTE, node: 'node-2' }]),
  service('empty', { type: 'NodePort', clusterIP: '10.96.0.14', ports: [{ name: 'p', port: 80, targetPort: 8080, nodePort: 30082, protocol: 'TCP' }] }),
  service('empty-udp', { type: 'NodePort', clusterIP: '10.96.0.22', ports: [{ name: 'p', port: 53, targetPort: 5300, nodePort: 30093, protocol: 'UDP' }] }),
  service('empty6', { type: 'NodePort', clusterIP: 'fd00:96::22', ports: [{ name: 'p', port: 80, targetPort: 8080, nodePort: 30092, protocol: 'TCP' }], spec: { ipFamilies: ['IPv6'], clusterIPs: ['fd00:96::22'] } }),
  ...nodePortService('etp-local', 15, 30083, 'TCP', 8080, [{ ip: '10.244.2.30', node: 'node-2' }], { externalTrafficPolicy: 'Local' }),
  service('lb', {
    type: 'LoadBalancer', clusterIP: '10.96.0.16', ports: [{ name: 'p', port: 80, targetPort: 8080, nodePort: 30084, protocol: 'TCP' }],
    spec: { loadBalancerSourceRanges: ['198.18.0.0/24'] }, status: { loadBalancer: { ingress: [{ ip: LB_IP }] } },
  }),
  slice('lb-1', 'lb', [{ ip: '10.244.1.21', node: 'node-1' }], { ports: [{ name: 'p', port: 8080, protocol: 'TCP' }] }),
  ...ipv6NodePort('web6', 17, 30086, [{ ip: LOCAL6, node: 'node-1' }]),
  ...ipv6NodePort('remote6', 18, 30088, [{ ip: REMOTE6, node: 'node-2' }]),
  ...nodePortService('affinity', 20, 30087, 'TCP', 8080, four(30), { sessionAffinity: 'ClientIP' }),
  ...nodePortService('etp-local-mixed', 23, 30094, 'TCP', 8080, [{ ip: '10.244.1.50', node: 'node-1' }, { ip: '10.244.2.50', node: 'node-2' }], { externalTrafficPolicy: 'Local' }),
  ...maglevService(),
];

interface Run {
  verdict: number;
  data: Buffer;
  out: Parsed;
}

function run(prog: number, f: Flow): Run {
  const r = progTestRun(prog, packet(f));
  return { verdict: r.retval, data: r.data, out: parse(r.data) };
}

function assertChecksums(p: Parsed, what = 'packet'): void {
  assert.ok(p.ipChecksumOk, `${what}: IPv4 header checksum invalid`);
  assert.ok(p.l4ChecksumOk, `${what}: L4 checksum 0x${p.l4Checksum.toString(16)}, recomputed 0x${p.l4ChecksumWant.toString(16)}`);
}

/** Where a packet goes, as `src:port > dst:port`. */
const tuple = (p: Parsed): string => `${p.src}:${p.sport} > ${p.dst}:${p.dport}`;

const inRange = (port: number, [lo, hi]: [number, number]): boolean => port >= lo && port <= hi;

/** The fields of a CT entry that do not change with time. */
const shape = (e: CtEntry) => ({ dir: e.dir, key: `${e.src}:${e.sport} > ${e.dst}:${e.dport}/${e.proto}`, nat: `${e.natSrc}:${e.natSport} > ${e.natDst}:${e.natDport}`, state: e.state, flags: e.flags });

test('the checksum helper: RFC 1071\'s worked example, and a frame built here verifies', () => {
  // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to dd f2.
  assert.equal(onesSum(Buffer.from('0001f203f4f5f6f7', 'hex')), 0xddf2);
  assert.equal(onesSum(Buffer.from('0001f203', 'hex'), Buffer.from('f4f5f6f7', 'hex')), 0xddf2);
  for (const f of [
    { src: CLIENT, sport: 1, dst: NODE, dport: 2, proto: 'tcp', payload: 'odd' },
    { src: CLIENT6, sport: 1, dst: NODE6, dport: 2, proto: 'udp', payload: 'x' },
  ] as const) {
    const p = parse(packet(f));
    assert.ok(p.ipChecksumOk && p.l4ChecksumOk && p.l4Checksum === p.l4ChecksumWant, JSON.stringify(p));
    const bad = packet(f);
    bad[bad.length - 1]! ^= 1;
    assert.equal(parse(bad).l4ChecksumOk, false, 'a flipped payload bit is caught');
  }
});

describe('per-packet tc programs (BPF_PROG_TEST_RUN on the loaded objects)', { skip }, () => {
  let s: EbpfScratch | undefined;
  let lb: SocketLB | undefined;
  const objs: PerPacket[] = [];
  let dp: EbpfDataPlane;
  /** Default CT timeouts, SNAT range `SNAT`. */
  let main: { from: number; to: number; pod: number; gc: number };
  /** Tiny CT timeouts. */
  let tiny: { from: number; to: number; pod: number; gc: number };
  /** Tiny CT timeouts and one SNAT port. */
  let onePort: { from: number; to: number; pod: number; gc: number };
  let ctFd = -1;
  let affFd = -1;
  let endsFd = -1;

  const perPacket = (k: Knobs): { from: number; to: number; pod: number; gc: number } => {
    const pp = loadPerPacket({ pinPath: s!.pinPath, knobs: k, sizes: SIZES, devices: [], logger: memoryLogger() });
    objs.push(pp);
    return { from: pp.obj.progFd('rd_from_netdev'), to: pp.obj.progFd('rd_to_netdev'), pod: pp.obj.progFd('rd_from_pod'), gc: pp.obj.progFd('rd_ct_gc') };
  };

  const ct = (filter?: (e: CtEntry) => boolean): CtEntry[] => dumpCt(ctFd).filter(filter ?? (() => true));

  /** Per-frontend counters as the data plane reads them (summed over CPUs). */
  const counter = async (frontend: string) => (await dp.counters()).frontends.find((f) => f.frontend === frontend)!;

  before(async () => {
    s = await createEbpfScratch([]);
    lb = loadSocketLB({ pinPath: s.pinPath, cgroupPath: s.cgroup, knobs: knobs(DEFAULT_CT_TIMEOUTS, SNAT), sizes: SIZES, logger: memoryLogger() });
    main = perPacket(knobs(DEFAULT_CT_TIMEOUTS, SNAT));
    tiny = perPacket(knobs(TINY_CT, SNAT));
    onePort = perPacket(knobs(TINY_CT, [50300, 50300]));
    ctFd = objs[0]!.fds.rd_ct;
    affFd = objs[0]!.fds.rd_aff_ext;
    endsFd = objs[0]!.fds.rd_ct_ends;
    dp = new EbpfDataPlane({ config: CFG, logger: memoryLogger(), pinPath: s.pinPath, sizes: SIZES, maps: { fds: lb.fds, io: bpfMap, perPacket: true } });
    await dp.init();
    const table = build(snapshotOf(OBJECTS), CFG);
    await dp.apply(diff(new Map(), table), table, { full: true });
  });

  beforeEach(() => {
    clearMap(ctFd, CtKeyCodec.size, 'rd_ct');
    clearMap(affFd, AffExtKeyCodec.size, 'rd_aff_ext');
  });

  after(async () => {
    try {
      for (const o of objs) o.close();
      lb?.close();
    } finally {
      try {
        if (s !== undefined) removePins(s.pinPath);
      } finally {
        await s?.remove();
      }
    }
  });

  test('all objects share one rd_ct (the pinned map)', () => {
    assert.ok(objs.length === 3 && objs.every((o) => o.fds.rd_ct > 0));
    run(tiny.from, { src: CLIENT, sport: 39999, dst: NODE, dport: 30080, proto: 'tcp' });
    assert.equal(ct().length, 2, 'an entry written by one object is read through another\'s fd');
  });

  describe('DNAT to a local endpoint', () => {
    test('TCP SYN to a NodePort: destination becomes the endpoint, the client address stays, checksums valid, two CT entries', () => {
      const r = run(main.from, { src: CLIENT, sport: 40000, dst: NODE, dport: 30080, proto: 'tcp' });
      // No ingress interface in a test run: the FIB lookup fails and the translated packet goes to the stack.
      assert.equal(r.verdict, TC_ACT.OK);
      assert.equal(tuple(r.out), `${CLIENT}:40000 > ${LOCAL}:8080`);
      assert.equal(r.out.flags, TCP.SYN);
      assert.equal(r.out.ttl, 64, 'not forwarded by the program, so not decremented');
      assertChecksums(r.out);
      assert.deepEqual(ct().map(shape).sort((a, b) => a.dir.localeCompare(b.dir)), [
        { dir: 'fwd', key: `${CLIENT}:40000 > ${NODE}:30080/6`, nat: `${CLIENT}:40000 > ${LOCAL}:8080`, state: CT_STATE.SYN, flags: 0 },
        { dir: 'reply', key: `${LOCAL}:8080 > ${CLIENT}:40000/6`, nat: `${NODE}:30080 > ${CLIENT}:40000`, state: CT_STATE.SYN, flags: 0 },
      ]);
    });

    test('TCP with a payload: the next packet of the flow is rewritten from its CT entry, payload intact', () => {
      run(main.from, { src: CLIENT, sport: 40000, dst: NODE, dport: 30080, proto: 'tcp' });
      const r = run(main.from, { src: CLIENT, sport: 40000, dst: NODE, dport: 30080, proto: 'tcp', flags: TCP.ACK | TCP.PSH, payload: 'GET / HTTP/1.1\r\n\r\n!' });
      assert.equal(tuple(r.out), `${CLIENT}:40000 > ${LOCAL}:8080`);
      assert.equal(r.out.payload.toString(), 'GET / HTTP/1.1\r\n\r\n!');
      assertChecksums(r.out);
      assert.equal(ct().length, 2, 'no new entries for a tracked flow');
    });

    test('UDP to a NodePort: translated with a valid checksum; an IPv4 datagram without a checksum keeps 0', () => {
      const r = run(main.from, { src: CLIENT, sport: 40000, dst: NODE, dport: 30053, proto: 'udp', payload: 'ping' });
      assert.equal(r.verdict, TC_ACT.OK);
      assert.equal(tuple(r.out), `${CLIENT}:40000 > ${LOCAL}:5300`);
      assert.notEqual(r.out.l4Checksum, 0);
      assertChecksums(r.out);
      assert.deepEqual(ct().map((e) => [e.dir, e.state]).sort(), [['fwd', CT_STATE.EST], ['reply', CT_STATE.SYN]]);
      const none = run(main.from, { src: CLIENT, sport: 40001, dst: NODE, dport: 30053, proto: 'udp', payload: 'ping', noUdpChecksum: true });
      assert.equal(tuple(none.out), `${CLIENT}:40001 > ${LOCAL}:5300`);
      assert.equal(none.out.l4Checksum, 0, 'no checksum stays no checksum');
      assertChecksums(none.out);
    });

    test('egress: the local endpoint\'s reply gets the NodePort address and port back', () => {
      run(main.from, { src: CLIENT, sport: 40002, dst: NODE, dport: 30080, proto: 'tcp' });
      const r = run(main.to, { src: LOCAL, sport: 8080, dst: CLIENT, dport: 40002, proto: 'tcp', flags: TCP.SYN | TCP.ACK });
      assert.equal(r.verdict, TC_ACT.OK);
      assert.equal(tuple(r.out), `${NODE}:30080 > ${CLIENT}:40002`);
      assert.equal(r.out.flags, TCP.SYN | TCP.ACK);
      assertChecksums(r.out);
      const reply = ct((e) => e.dir === 'reply');
      assert.equal(reply.length, 1);
      assert.equal(reply[0]!.state, CT_STATE.EST, 'the reply direction saw a SYN-ACK');
      // A packet from the endpoint to someone who never talked to the service is not touched.
      const stray = packet({ src: LOCAL, sport: 8080, dst: CLIENT2, dport: 40002, proto: 'tcp', flags: TCP.ACK });
      const untouched = progTestRun(main.to, stray);
      assert.equal(untouched.retval, TC_ACT.OK);
      assert.deepEqual(untouched.data, stray);
    });

    test('pod side: the local endpoint\'s reply entering from its interface (rd_from_pod) gets the NodePort address back', () => {
      run(main.from, { src: CLIENT, sport: 40003, dst: NODE, dport: 30080, proto: 'tcp' });
      const r = run(main.pod, { src: LOCAL, sport: 8080, dst: CLIENT, dport: 40003, proto: 'tcp', flags: TCP.SYN | TCP.ACK, payload: 'x' });
      // Routed past netfilter where the FIB knows the way; a test run has no ingress interface, so to the stack.
      assert.equal(r.verdict, TC_ACT.OK);
      assert.equal(tuple(r.out), `${NODE}:30080 > ${CLIENT}:40003`);
      assertChecksums(r.out);
      // What a pod sends to anyone else is not touched.
      const other = packet({ src: LOCAL, sport: 8080, dst: CLIENT, dport: 40004, proto: 'tcp', flags: TCP.ACK });
      assert.deepEqual(progTestRun(main.pod, other).data, other);
    });
  });

  describe('the flow-end filter in front of rd_ct, and the mark of forwarded packets', () => {
    const slotKey = Buffer.alloc(4);
    const slotVal = Buffer.alloc(4);
    /** The slots of rd_ct_ends that are set (index -> time), from one batch read. */
    const liveSlots = (): Map<number, number> => {
      const { keys, values, count } = dumpRaw(endsFd, 'rd_ct_ends', 4, 4, bpfMap);
      const m = new Map<number, number>();
      for (let i = 0; i < count; i++) if (values.readUInt32LE(i * 4) !== 0) m.set(keys.readUInt32LE(i * 4), values.readUInt32LE(i * 4));
      return m;
    };
    const setSlot = (i: number, t: number): void => {
      slotKey.writeUInt32LE(i);
      slotVal.writeUInt32LE(t >>> 0); // the programs subtract in 32 bits: an early time wraps
      bpfMap.update(endsFd, slotKey, slotVal, 'rd_ct_ends');
    };
    /** The programs' clock (CLOCK_MONOTONIC, as bpf_ktime_get_ns) in rd_ct_ends units. */
    const nowUnits = (): number => Number(process.hrtime.bigint() >> 30n) + 1;
    /** A 56-byte struct __sk_buff context carrying only a mark; its mark once the program ran. */
    const ctxWithMark = (mark: number): Buffer => {
      const c = Buffer.alloc(192);
      c.writeUInt32LE(mark, 8);
      return c;
    };

    test('the window is the longest CT timeout in 2^30 ns units, plus two', () => {
      // 21,600 s (established TCP) = 20,116.6 units.
      assert.equal(ctEndWindow(DEFAULT_CT_TIMEOUTS), 20_119);
      assert.equal(ctEndWindow(TINY_CT), 5);
    });

    test('a new flow sets its two ends; its packets are looked up in rd_ct only while those slots are live', () => {
      for (const i of liveSlots().keys()) setSlot(i, 0);
      const syn = run(main.from, { src: CLIENT, sport: 40010, dst: NODE, dport: 30080, proto: 'tcp' });
      assert.equal(tuple(syn.out), `${CLIENT}:40010 > ${LOCAL}:8080`);
      const slots = liveSlots();
      assert.equal(slots.size, 2, 'the frontend end and the backend end');
      const t = nowUnits();
      for (const v of slots.values()) assert.ok(Math.abs(v - t) <= 1, `slot time ${v}, now ${t}`);
      const reply = { src: LOCAL, sport: 8080, dst: CLIENT, dport: 40010, proto: 'tcp', flags: TCP.ACK } as const;
      const data = { src: CLIENT, sport: 40010, dst: NODE, dport: 30080, proto: 'tcp', flags: TCP.ACK, payload: 'x' } as const;
      assert.equal(tuple(run(main.pod, reply).out), `${NODE}:30080 > ${CLIENT}:40010`);

      // Older than the window: the entries are still in rd_ct, but no packet reaches them.
      const window = ctEndWindow(DEFAULT_CT_TIMEOUTS);
      for (const i of slots.keys()) setSlot(i, nowUnits() - window - 1);
      assert.deepEqual(progTestRun(main.pod, packet(reply)).data, packet(reply), 'reply untouched');
      assert.deepEqual(progTestRun(main.to, packet(reply)).data, packet(reply), 'reply untouched on egress');
      assert.deepEqual(progTestRun(main.from, packet(data)).data, packet(data), 'client data untouched');
      assert.equal(ct().length, 2);

      // Just inside it: found again, and a tracked packet refreshes its ends.
      for (const i of slots.keys()) setSlot(i, nowUnits() - window + 1);
      assert.equal(tuple(run(main.pod, reply).out), `${NODE}:30080 > ${CLIENT}:40010`);
      assert.equal(tuple(run(main.from, data).out), `${CLIENT}:40010 > ${LOCAL}:8080`);
    });

    test('a refused SYN leaves with the forwarded mark; the egress program passes a marked packet untouched and clears the mark', () => {
      const refused = progTestRun(main.from, packet({ src: CLIENT, sport: 40011, dst: NODE, dport: 30082, proto: 'tcp' }), ctxWithMark(0));
      assert.equal(refused.retval, TC_ACT.REDIRECT);
      assert.equal(refused.ctx!.readUInt32LE(8), MARK_FORWARDED);
      const kept = progTestRun(main.from, packet({ src: CLIENT, sport: 40012, dst: NODE, dport: 30082, proto: 'tcp' }), ctxWithMark(0x4000));
      assert.equal(kept.ctx!.readUInt32LE(8), 0x4000, 'a mark someone else set is left alone');

      run(main.from, { src: CLIENT, sport: 40013, dst: NODE, dport: 30080, proto: 'tcp' });
      const reply = packet({ src: LOCAL, sport: 8080, dst: CLIENT, dport: 40013, proto: 'tcp', flags: TCP.SYN | TCP.ACK });
      const passed = progTestRun(main.to, reply, ctxWithMark(MARK_FORWARDED));
      assert.equal(passed.retval, TC_ACT.OK);
      assert.deepEqual(passed.data, reply, 'not translated a second time');
      assert.equal(passed.ctx!.readUInt32LE(8), 0, 'mark cleared');
      const other = progTestRun(main.to, reply, ctxWithMark(0x4000));
      assert.equal(tuple(parse(other.data)), `${NODE}:30080 > ${CLIENT}:40013`, 'another mark: translated');
      assert.equal(other.ctx!.readUInt32LE(8), 0x4000);
    });
  });

  describe('SNAT to a remote endpoint', () => {
    test('a SYN gets the node address and a port from the SNAT range; the reply goes back as frontend -> client', () => {
      const r = run(main.from, { src: CLIENT, sport: 40000, dst: NODE, dport: 30081, proto: 'tcp' });
      assert.equal(r.verdict, TC_ACT.OK);
      const port = r.out.sport;
      assert.ok(inRange(port, SNAT), `SNAT port ${port} outside ${SNAT.join('-')}`);
      assert.equal(tuple(r.out), `${NODE}:${port} > ${REMOTE}:8080`);
      assertChecksums(r.out);
      assert.deepEqual(ct().map(shape).sort((a, b) => a.dir.localeCompare(b.dir)), [
        { dir: 'fwd', key: `${CLIENT}:40000 > ${NODE}:30081/6`, nat: `${NODE}:${port} > ${REMOTE}:8080`, state: CT_STATE.SYN, flags: CT_F_SNAT },
        { dir: 'reply', key: `${REMOTE}:8080 > ${NODE}:${port}/6`, nat: `${NODE}:30081 > ${CLIENT}:40000`, state: CT_STATE.SYN, flags: CT_F_SNAT },
      ]);
      const synAck = run(main.from, { src: REMOTE, sport: 8080, dst: NODE, dport: port, proto: 'tcp', flags: TCP.SYN | TCP.ACK });
      assert.equal(synAck.verdict, TC_ACT.OK);
      assert.equal(tuple(synAck.out), `${NODE}:30081 > ${CLIENT}:40000`);
      assertChecksums(synAck.out, 'reply');
    });

    test('the same flow keeps its port and entries; another client gets another port', () => {
      const first = run(main.from, { src: CLIENT, sport: 40000, dst: NODE, dport: 30081, proto: 'tcp' });
      const again = run(main.from, { src: CLIENT, sport: 40000, dst: NODE, dport: 30081, proto: 'tcp', flags: TCP.ACK, payload: 'data' });
      assert.equal(tuple(again.out), tuple(first.out));
      assertChecksums(again.out);
      assert.equal(ct().length, 2);
      const other = run(main.from, { src: CLIENT2, sport: 40000, dst: NODE, dport: 30081, proto: 'tcp' });
      assert.equal(other.out.src, NODE);
      assert.ok(inRange(other.out.sport, SNAT));
      assert.notEqual(other.out.sport, first.out.sport, 'two flows to one backend never share a SNAT port');
      assert.equal(ct().length, 4);
    });

    test('an off-cluster client of a ClusterIP is masqueraded too (kube-proxy: ! -s clusterCIDR -j KUBE-MARK-MASQ)', () => {
      const r = run(main.from, { src: CLIENT, sport: 40000, dst: '10.96.0.12', dport: 80, proto: 'tcp' });
      assert.equal(r.out.src, NODE);
      assert.ok(inRange(r.out.sport, SNAT));
      assert.equal(`${r.out.dst}:${r.out.dport}`, `${REMOTE}:8080`);
      const back = run(main.from, { src: REMOTE, sport: 8080, dst: NODE, dport: r.out.sport, proto: 'tcp', flags: TCP.SYN | TCP.ACK });
      assert.equal(tuple(back.out), `10.96.0.12:80 > ${CLIENT}:40000`);
      assertChecksums(back.out, 'reply');
    });

    test('UDP: SNATed, and the reply comes back to the client', () => {
      const r = run(main.from, { src: CLIENT, sport: 40000, dst: NODE, dport: 30091, proto: 'udp', payload: 'q' });
      assert.equal(r.out.src, NODE);
      assert.ok(inRange(r.out.sport, SNAT));
      assert.equal(`${r.out.dst}:${r.out.dport}`, `${REMOTE}:5300`);
      assertChecksums(r.out);
      const back = run(main.from, { src: REMOTE, sport: 5300, dst: NODE, dport: r.out.sport, proto: 'udp', payload: 'answer' });
      assert.equal(tuple(back.out), `${NODE}:30091 > ${CLIENT}:40000`);
      assert.equal(back.out.payload.toString(), 'answer');
      assertChecksums(back.out, 'reply');
    });
  });

  describe('connection tracking states and expiry (CT timeouts SYN 1 s, established 3 s, closing 1 s, UDP 2 s)', () => {
    test('SYN -> established -> closing; established outlives a SYN-only flow; an expired flow starts anew', async () => {
      const fwdOf = (client: string) => ct((e) => e.dir === 'fwd' && e.src === client)[0];
      const replyTo = (port: number) => ct((e) => e.dir === 'reply' && e.dport === port)[0];

      // Flow A: a full handshake.
      const a = run(tiny.from, { src: CLIENT, sport: 41000, dst: NODE, dport: 30081, proto: 'tcp' });
      const portA = a.out.sport;
      assert.equal(fwdOf(CLIENT)!.state, CT_STATE.SYN);
      assert.equal(replyTo(portA)!.state, CT_STATE.SYN);
      run(tiny.from, { src: REMOTE, sport: 8080, dst: NODE, dport: portA, proto: 'tcp', flags: TCP.SYN | TCP.ACK });
      assert.equal(replyTo(portA)!.state, CT_STATE.EST, 'SYN-ACK: the reply direction is established');
      assert.equal(fwdOf(CLIENT)!.state, CT_STATE.SYN, 'the client has sent only a SYN so far');
      run(tiny.from, { src: CLIENT, sport: 41000, dst: NODE, dport: 30081, proto: 'tcp', flags: TCP.ACK });
      assert.equal(fwdOf(CLIENT)!.state, CT_STATE.EST, 'ACK: established');
      // Flow B: a SYN and nothing else. Flow U: one UDP datagram and its answer.
      const b = run(tiny.from, { src: CLIENT2, sport: 41000, dst: NODE, dport: 30081, proto: 'tcp' });
      const u = run(tiny.from, { src: OUTSIDE, sport: 41000, dst: NODE, dport: 30091, proto: 'udp', payload: 'x' });
      run(tiny.from, { src: REMOTE, sport: 5300, dst: NODE, dport: u.out.sport, proto: 'udp', payload: 'y' });
      assert.equal(replyTo(u.out.sport)!.state, CT_STATE.EST);
      const seenA = fwdOf(CLIENT)!.lastSeenNs;
      const seenB = replyTo(b.out.sport)!.lastSeenNs;
      const seenU = fwdOf(OUTSIDE)!.lastSeenNs;
      assert.equal(ct().length, 6);

      await sleep(1300);
      // A is established (3 s): still tracked, same port, no new entry; the entry is refreshed (>1 s since).
      const a2 = run(tiny.from, { src: CLIENT, sport: 41000, dst: NODE, dport: 30081, proto: 'tcp', flags: TCP.ACK, payload: 'more' });
      assert.equal(tuple(a2.out), `${NODE}:${portA} > ${REMOTE}:8080`);
      assert.ok(fwdOf(CLIENT)!.lastSeenNs > seenA, 'refreshed');
      // B's SYN state expired (1 s): it is no longer tracked, so an ACK of it is not translated,
      // and its retransmitted SYN is a new flow, whose reply entry is written anew.
      const stale = run(tiny.from, { src: CLIENT2, sport: 41000, dst: NODE, dport: 30081, proto: 'tcp', flags: TCP.ACK });
      assert.equal(tuple(stale.out), `${CLIENT2}:41000 > ${NODE}:30081`, 'untracked: left to the stack');
      const b2 = run(tiny.from, { src: CLIENT2, sport: 41000, dst: NODE, dport: 30081, proto: 'tcp' });
      assert.equal(b2.verdict, TC_ACT.OK);
      assert.equal(b2.out.dst, REMOTE);
      assert.ok(inRange(b2.out.sport, SNAT));
      assert.equal(fwdOf(CLIENT2)!.natSport, b2.out.sport);
      assert.ok(replyTo(b2.out.sport)!.lastSeenNs > seenB, 'B was treated as a new flow: a fresh reply entry');

      // A closes: FIN from the client, RST from the backend.
      run(tiny.from, { src: CLIENT, sport: 41000, dst: NODE, dport: 30081, proto: 'tcp', flags: TCP.FIN | TCP.ACK });
      assert.equal(fwdOf(CLIENT)!.state, CT_STATE.CLOSING, 'FIN: closing');
      const rst = run(tiny.from, { src: REMOTE, sport: 8080, dst: NODE, dport: portA, proto: 'tcp', flags: TCP.RST });
      assert.equal(tuple(rst.out), `${NODE}:30081 > ${CLIENT}:41000`, 'the RST of a tracked flow is translated');
      assert.equal(replyTo(portA)!.state, CT_STATE.CLOSING, 'RST: closing');
      const closedAt = fwdOf(CLIENT)!.lastSeenNs;

      await sleep(1300);
      // Closing lasts 1 s: the same tuple's SYN is a new flow (a tracked one would stay closing).
      const a3 = run(tiny.from, { src: CLIENT, sport: 41000, dst: NODE, dport: 30081, proto: 'tcp' });
      assert.equal(a3.out.dst, REMOTE);
      const fwdA = fwdOf(CLIENT)!;
      assert.equal(fwdA.state, CT_STATE.SYN);
      assert.ok(fwdA.lastSeenNs > closedAt);
      assert.equal(fwdA.natSport, a3.out.sport);
      assert.equal(replyTo(a3.out.sport)!.state, CT_STATE.SYN);
      // U's last packet is 2.6 s old (UDP 2 s): a new flow, its reply entry written anew.
      const u2 = run(tiny.from, { src: OUTSIDE, sport: 41000, dst: NODE, dport: 30091, proto: 'udp', payload: 'z' });
      assert.equal(u2.out.dst, REMOTE);
      assert.ok(fwdOf(OUTSIDE)!.lastSeenNs > seenU);
      assert.equal(replyTo(u2.out.sport)!.state, CT_STATE.SYN, 'an expired UDP flow is a new flow');
    });

    test('a UDP flow kept busy by the backend alone still translates the client\'s next datagram (as nf_conntrack: either direction refreshes it)', async () => {
      const first = run(tiny.from, { src: CLIENT, sport: 45000, dst: NODE, dport: 30091, proto: 'udp', payload: 'subscribe' });
      const port = first.out.sport;
      // The backend streams: a datagram every 1.15 s (each one refreshes the reply entry), the client is silent.
      for (let i = 0; i < 2; i++) {
        await sleep(1150);
        const frame = run(tiny.from, { src: REMOTE, sport: 5300, dst: NODE, dport: port, proto: 'udp', payload: `frame ${i}` });
        assert.equal(tuple(frame.out), `${NODE}:30091 > ${CLIENT}:45000`, `frame ${i} reaches the client`);
      }
      // 2.3 s after the client's only datagram, with the flow busy all along.
      const stop = run(tiny.from, { src: CLIENT, sport: 45000, dst: NODE, dport: 30091, proto: 'udp', payload: 'stop' });
      const replies = ct((e) => e.dir === 'reply' && e.natDst === CLIENT && e.natDport === 45000);
      assert.equal(tuple(stop.out), `${NODE}:${port} > ${REMOTE}:5300`, `the client's datagram left the flow: ${JSON.stringify(replies.map(shape))}`);
      assert.equal(replies.length, 1, `one flow, one reply entry: ${JSON.stringify(replies.map(shape))}`);
    });

    test('an expired flow does not keep its SNAT port: with one port in the range (--bpf-snat-ports 50300-50300), the next flow gets it', async () => {
      const c = run(onePort.from, { src: CLIENT, sport: 42000, dst: NODE, dport: 30081, proto: 'tcp' });
      assert.equal(tuple(c.out), `${NODE}:50300 > ${REMOTE}:8080`);
      // While that flow lives, its port is taken: another client's flow cannot be SNATed.
      const d = run(onePort.from, { src: CLIENT2, sport: 42000, dst: NODE, dport: 30081, proto: 'tcp' });
      assert.equal(d.verdict, TC_ACT.SHOT);
      await sleep(1300);
      // Both entries of the first flow have expired (SYN state, 1 s): they count as absent (lib/ct.h).
      const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, as bpf_ktime_get_ns()
      const held = ct().map((e) => ({ ...shape(e), ageMs: Number((now - e.lastSeenNs) / 1_000_000n) }));
      assert.ok(held.length === 2 && held.every((e) => e.ageMs > 1000), JSON.stringify(held));
      const d2 = run(onePort.from, { src: CLIENT2, sport: 42001, dst: NODE, dport: 30081, proto: 'tcp' });
      assert.equal(d2.verdict, TC_ACT.OK, `a new flow is dropped while expired entries hold the only SNAT port: ${JSON.stringify(held)}`);
      assert.equal(tuple(d2.out), `${NODE}:50300 > ${REMOTE}:8080`);
    });
  });

  describe('verdicts', () => {
    test('a frontend without endpoints is refused: ICMP port unreachable back to the client (TC_ACT_REDIRECT), counted', async () => {
      const before = await counter(`${NODE}:30082`);
      for (const [f, what] of [
        [{ src: CLIENT, sport: 40000, dst: NODE, dport: 30082, proto: 'tcp' }, 'TCP'],
        [{ src: CLIENT, sport: 40000, dst: NODE, dport: 30093, proto: 'udp' }, 'UDP without payload'],
      ] as const) {
        const sent = packet(f);
        const r = progTestRun(main.from, sent);
        assert.equal(r.retval, TC_ACT.REDIRECT, `${what}: sent back out`);
        const icmp = parseIcmp(r.data);
        assert.deepEqual({ family: icmp.family, src: icmp.src, dst: icmp.dst, type: icmp.type, code: icmp.code }, { family: 4, src: NODE, dst: CLIENT, type: 3, code: 3 }, what);
        // RFC 792: the offending packet's IP header and at least its first 8 bytes beyond.
        assert.ok(icmp.quoted.length >= 28 && icmp.quoted.equals(sent.subarray(14, 14 + icmp.quoted.length)), `${what}: quotes the packet as it came: ${icmp.quoted.toString('hex')}`);
        assert.deepEqual({ src: icmp.srcMac, dst: icmp.dstMac }, { src: MACS.dst, dst: MACS.src }, `${what}: addressed to the sender's MAC`);
        assert.ok(icmp.ipChecksumOk, `${what}: IPv4 header checksum`);
        assert.ok(icmp.icmpChecksumOk, `${what}: ICMP checksum`);
        assert.ok(icmp.ttl > 1);
      }
      assert.equal(ct().length, 0);
      assert.equal((await counter(`${NODE}:30082`)).refused, before.refused + 1);
    });

    test('IPv6: a frontend without endpoints is refused with ICMPv6 port unreachable, checksum over the pseudo-header', () => {
      const sent = packet({ src: CLIENT6, sport: 40000, dst: NODE6, dport: 30092, proto: 'tcp' });
      const r = progTestRun(main.from, sent);
      assert.equal(r.retval, TC_ACT.REDIRECT);
      const icmp = parseIcmp(r.data);
      assert.deepEqual({ family: icmp.family, src: icmp.src, dst: icmp.dst, type: icmp.type, code: icmp.code }, { family: 6, src: NODE6, dst: CLIENT6, type: 1, code: 4 });
      assert.ok(icmp.quoted.length >= 48 && icmp.quoted.equals(sent.subarray(14, 14 + icmp.quoted.length)), `quotes the packet as it came: ${icmp.quoted.toString('hex')}`);
      assert.deepEqual({ src: icmp.srcMac, dst: icmp.dstMac }, { src: MACS.dst, dst: MACS.src });
      assert.ok(icmp.icmpChecksumOk, 'ICMPv6 checksum');
      assert.equal(ct().length, 0);
    });

    test('externalTrafficPolicy Local without a local endpoint: SHOT, counted as dropped', async () => {
      const before = await counter(`${NODE}:30083`);
      const r = run(main.from, { src: CLIENT, sport: 40000, dst: NODE, dport: 30083, proto: 'tcp' });
      assert.equal(r.verdict, TC_ACT.SHOT);
      assert.equal(ct().length, 0);
      assert.equal((await counter(`${NODE}:30083`)).dropped, before.dropped + 1);
    });

    test('loadBalancerSourceRanges: a source outside is dropped, one inside is translated; the NodePort ignores the ranges', async () => {
      const before = await counter(`${LB_IP}:80`);
      const out = run(main.from, { src: OUTSIDE, sport: 40000, dst: LB_IP, dport: 80, proto: 'tcp' });
      assert.equal(out.verdict, TC_ACT.SHOT);
      assert.equal((await counter(`${LB_IP}:80`)).dropped, before.dropped + 1);
      const inside = run(main.from, { src: CLIENT, sport: 40000, dst: LB_IP, dport: 80, proto: 'tcp' });
      assert.equal(inside.verdict, TC_ACT.OK);
      assert.equal(tuple(inside.out), `${CLIENT}:40000 > 10.244.1.21:8080`);
      assertChecksums(inside.out);
      // kube-proxy applies the ranges to the LB IP only.
      const np = run(main.from, { src: OUTSIDE, sport: 40000, dst: NODE, dport: 30084, proto: 'tcp' });
      assert.equal(tuple(np.out), `${OUTSIDE}:40000 > 10.244.1.21:8080`);
    });

    test('packets that are not for a frontend go to the stack untouched', () => {
      const frames = [
        packet({ src: CLIENT, sport: 40000, dst: NODE, dport: 22, proto: 'tcp' }),
        packet({ src: CLIENT, sport: 40000, dst: '198.18.0.77', dport: 30080, proto: 'tcp' }),
        packet({ src: CLIENT, sport: 40000, dst: NODE, dport: 30080, proto: 'udp' }),
        packet({ src: CLIENT6, sport: 40000, dst: NODE6, dport: 30080, proto: 'tcp' }),
        // NodePorts on 127.0.0.1 belong to the node's own processes.
        packet({ src: CLIENT, sport: 40000, dst: '127.0.0.1', dport: 30080, proto: 'tcp' }),
      ];
      // Not TCP or UDP: the same bytes labelled ICMP (header checksum fixed up).
      const icmp = packet({ src: CLIENT, sport: 0, dst: NODE, dport: 0, proto: 'udp' });
      icmp[23] = PROTO.ICMP;
      icmp.writeUInt16BE(0, 24);
      icmp.writeUInt16BE(~onesSum(icmp.subarray(14, 34)) & 0xffff, 24);
      frames.push(icmp);
      for (const f of frames) {
        const r = progTestRun(main.from, f);
        assert.equal(r.retval, TC_ACT.OK);
        assert.deepEqual(r.data, f, parse(f).dst);
      }
      assert.equal(ct().length, 0);
    });

    test('externalTrafficPolicy Local with a local and a remote endpoint: only the local one, client address kept', () => {
      const dsts = new Set<string>();
      for (let i = 0; i < 16; i++) {
        const r = run(main.from, { src: CLIENT, sport: 46000 + i, dst: NODE, dport: 30094, proto: 'tcp' });
        assert.equal(r.out.src, CLIENT);
        assert.equal(r.out.sport, 46000 + i);
        dsts.add(`${r.out.dst}:${r.out.dport}`);
      }
      assert.deepEqual([...dsts], ['10.244.1.50:8080']);
    });

    test('only a SYN opens a flow: a stray RST, ACK or SYN-ACK to a frontend goes to the stack untouched and opens nothing', () => {
      for (const flags of [TCP.RST, TCP.ACK, TCP.ACK | TCP.PSH, TCP.SYN | TCP.ACK, TCP.SYN | TCP.RST]) {
        const f = packet({ src: CLIENT, sport: 40000, dst: NODE, dport: 30080, proto: 'tcp', flags });
        const r = progTestRun(main.from, f);
        assert.equal(r.retval, TC_ACT.OK, `flags ${flags}`);
        assert.deepEqual(r.data, f, `flags ${flags}: untouched`);
      }
      assert.equal(ct().length, 0);
      assert.equal(run(main.from, { src: CLIENT, sport: 40000, dst: NODE, dport: 30080, proto: 'tcp', flags: TCP.SYN }).out.dst, LOCAL, 'the SYN does');
    });
  });

  describe('IPv6', () => {
    test('DNAT of a TCP SYN to an IPv6 NodePort, checksum valid over the IPv6 pseudo-header; egress rewrites the reply', () => {
      const r = run(main.from, { src: CLIENT6, sport: 40000, dst: NODE6, dport: 30086, proto: 'tcp' });
      assert.equal(r.verdict, TC_ACT.OK);
      assert.equal(r.out.family, 6);
      assert.equal(tuple(r.out), `${CLIENT6}:40000 > ${LOCAL6}:8080`);
      assertChecksums(r.out);
      const back = run(main.to, { src: LOCAL6, sport: 8080, dst: CLIENT6, dport: 40000, proto: 'tcp', flags: TCP.SYN | TCP.ACK });
      assert.equal(tuple(back.out), `${NODE6}:30086 > ${CLIENT6}:40000`);
      assertChecksums(back.out, 'reply');
    });

    test('SNAT of IPv6 to a remote endpoint: the node\'s IPv6 address and a SNAT port, and back', () => {
      const r = run(main.from, { src: CLIENT6, sport: 40000, dst: NODE6, dport: 30088, proto: 'tcp' });
      assert.equal(r.out.src, NODE6);
      assert.ok(inRange(r.out.sport, SNAT));
      assert.equal(`${r.out.dst}:${r.out.dport}`, `${REMOTE6}:8080`);
      assertChecksums(r.out);
      const back = run(main.from, { src: REMOTE6, sport: 8080, dst: NODE6, dport: r.out.sport, proto: 'tcp', flags: TCP.SYN | TCP.ACK });
      assert.equal(tuple(back.out), `${NODE6}:30088 > ${CLIENT6}:40000`);
      assertChecksums(back.out, 'reply');
    });
  });

  describe('backend selection', () => {
    test('ClientIP affinity: every flow of a client reaches one backend of four; clients spread', () => {
      const backendOf = (src: string, sport: number) => run(main.from, { src, sport, dst: NODE, dport: 30087, proto: 'tcp' }).out.dst;
      const one = new Set(Array.from({ length: 12 }, (_, i) => backendOf(CLIENT, 43000 + i)));
      assert.equal(one.size, 1, `one client, one backend: ${[...one].join(', ')}`);
      assert.equal(mapKeys(affFd, AffExtKeyCodec.size, 'rd_aff_ext').length, 1, 'one affinity entry, keyed by the client address');
      const many = new Set(Array.from({ length: 24 }, (_, i) => backendOf(`198.18.0.${150 + i}`, 43000)));
      assert.ok(many.size > 1, 'different clients are not all sent to one backend');
      for (const b of many) assert.match(b, /^10\.244\.1\.3[0-3]$/);
    });

    test('Maglev: the per-packet path hashes a flow into the Maglev table, so a flow whose CT entries are gone picks the same backend', async () => {
      const entries = (await dp.programmed()).filter((f) => f.address === `${NODE}:30089`);
      assert.ok(entries.length > 0 && entries.every((f) => f.flags?.includes('maglev')), JSON.stringify(entries));
      const flow: Flow = { src: CLIENT, sport: 44000, dst: NODE, dport: 30089, proto: 'tcp' };
      const picks = new Set<string>();
      for (let i = 0; i < 8; i++) {
        clearMap(ctFd, CtKeyCodec.size, 'rd_ct');
        const r = run(main.from, flow);
        assert.match(r.out.dst, /^10\.244\.1\.4[0-3]$/);
        picks.add(r.out.dst);
      }
      assert.equal(picks.size, 1, `one flow, one backend, as on every node with the same backends: got ${[...picks].join(', ')}`);
      const spread = new Set(Array.from({ length: 24 }, (_, i) => run(main.from, { ...flow, sport: 44100 + i }).out.dst));
      assert.ok(spread.size > 1, 'different flows spread over the backends');
    });
  });

  describe('ICMP errors about translated flows', () => {
    /** An IPv4 ICMP error from `src` to `dst` quoting the first 28 bytes of `offending` (a frame). */
    const icmpError4 = (src: string, dst: string, type: number, code: number, offending: Buffer, rest = 0): Buffer => {
      const quote = offending.subarray(14, 14 + 28);
      const f = Buffer.alloc(14 + 20 + 8 + quote.length);
      Buffer.from(MACS.dst, 'hex').copy(f, 0);
      Buffer.from(MACS.src, 'hex').copy(f, 6);
      f.writeUInt16BE(0x0800, 12);
      f[14] = 0x45;
      f.writeUInt16BE(20 + 8 + quote.length, 16);
      f[22] = 64;
      f[23] = PROTO.ICMP;
      addrBytes(src).copy(f, 26);
      addrBytes(dst).copy(f, 30);
      f.writeUInt16BE(0xffff - onesSum(f.subarray(14, 34)), 24);
      f[34] = type;
      f[35] = code;
      f.writeUInt32BE(rest, 38);
      quote.copy(f, 42);
      f.writeUInt16BE(0xffff - onesSum(f.subarray(34)), 36);
      return f;
    };
    const ROUTER = '198.18.0.254';

    test('fragmentation needed about a packet sent to a remote backend reaches the client, about the packet it sent', () => {
      const syn = progTestRun(main.from, packet({ src: CLIENT, sport: 40000, dst: NODE, dport: 30081, proto: 'tcp' }));
      const snat = parse(syn.data);
      assert.equal(snat.src, NODE);
      const r = progTestRun(main.from, icmpError4(ROUTER, NODE, 3, 4, syn.data, 1400));
      assert.equal(r.retval, TC_ACT.OK, 'translated, then to the stack (no route in a test run)');
      const e = parseIcmp(r.data);
      assert.equal(e.dst, CLIENT, 'to the client');
      assert.equal(e.src, ROUTER, 'from the router that sent it');
      assert.deepEqual([e.type, e.code, r.data.readUInt16BE(40)], [3, 4, 1400], 'type, code and MTU kept');
      assert.ok(e.ipChecksumOk && e.icmpChecksumOk, 'outer and ICMP checksums valid');
      const q = e.quoted;
      assert.equal(`${[...q.subarray(12, 16)].join('.')}:${q.readUInt16BE(20)} > ${[...q.subarray(16, 20)].join('.')}:${q.readUInt16BE(22)}`, `${CLIENT}:40000 > ${NODE}:30081`, 'the quote is what the client sent');
      assert.equal(onesSum(q.subarray(0, 20)), 0xffff, 'the quoted IPv4 header\'s checksum is valid');
    });

    test('port unreachable from a local backend about a UDP datagram comes from the frontend, about the datagram the client sent', () => {
      const dg = progTestRun(main.from, packet({ src: CLIENT, sport: 40010, dst: NODE, dport: 30053, proto: 'udp', payload: 'x' }));
      assert.equal(parse(dg.data).dst, LOCAL);
      for (const prog of [main.pod, main.to]) {
        const r = progTestRun(prog, icmpError4(LOCAL, CLIENT, 3, 3, dg.data));
        assert.equal(r.retval, TC_ACT.OK);
        const e = parseIcmp(r.data);
        assert.deepEqual([e.src, e.dst, e.type, e.code], [NODE, CLIENT, 3, 3]);
        assert.ok(e.ipChecksumOk && e.icmpChecksumOk);
        assert.equal(`${[...e.quoted.subarray(16, 20)].join('.')}:${e.quoted.readUInt16BE(22)}`, `${NODE}:30053`);
      }
    });

    test('an error about no tracked flow is left as it is', () => {
      const other = packet({ src: CLIENT, sport: 40020, dst: '10.244.9.9', dport: 80, proto: 'tcp' });
      const f = icmpError4(ROUTER, CLIENT, 3, 4, other, 1400);
      const r = progTestRun(main.from, f);
      assert.equal(r.retval, TC_ACT.OK);
      assert.deepEqual(r.data, f);
    });
  });

  test('the agent\'s sweep (rd_ct_gc in the kernel) deletes expired entries and counts the live ones by state', async () => {
    // An established flow (both directions saw data) and a SYN-only one; the SYN timeout is 1 s here.
    run(tiny.from, { src: CLIENT, sport: 41000, dst: NODE, dport: 30080, proto: 'tcp' });
    run(tiny.to, { src: LOCAL, sport: 8080, dst: CLIENT, dport: 41000, proto: 'tcp', flags: TCP.SYN | TCP.ACK });
    run(tiny.from, { src: CLIENT, sport: 41000, dst: NODE, dport: 30080, proto: 'tcp', flags: TCP.ACK });
    run(tiny.from, { src: CLIENT, sport: 41001, dst: NODE, dport: 30080, proto: 'tcp' });
    assert.equal(ct().length, 4);
    const before = sweepCt(tiny.gc, SIZES.ct);
    assert.deepEqual(before, { syn: 2, established: 2, closing: 0, deleted: 0, capacity: SIZES.ct });
    await sleep(1300);
    // Meanwhile another CPU refreshed the SYN-only flow's forward entry just after the sweep read
    // its clock (here: a second ahead of it): a negative age is live, not 2^64 ns old.
    const fwd = ct((e) => e.dir === 'fwd' && e.sport === 41001)[0]!;
    const key = ctKey(fwd);
    const val = Buffer.alloc(CtValCodec.size);
    assert.ok(bpfMap.lookup(ctFd, key, val, 'rd_ct'));
    val.writeBigUInt64LE(process.hrtime.bigint() + 1_000_000_000n, CtValCodec.offsets.last_seen_ns);
    bpfMap.update(ctFd, key, val, 'rd_ct');
    const after2 = sweepCt(tiny.gc, SIZES.ct);
    assert.deepEqual(after2, { syn: 1, established: 2, closing: 0, deleted: 1, capacity: SIZES.ct });
    assert.deepEqual(ct().map((e) => `${e.dir} ${e.sport === 41000 || e.dport === 41000 ? 'established' : 'refreshed'}`).sort(),
      ['fwd established', 'fwd refreshed', 'reply established'], 'what is left is the established flow and the refreshed entry');
    // The entry from the future is tracked by the programs too.
    const r = run(tiny.from, { src: CLIENT, sport: 41001, dst: NODE, dport: 30080, proto: 'tcp', flags: TCP.ACK });
    assert.equal(tuple(r.out), `${CLIENT}:41001 > ${LOCAL}:8080`);
  });
});

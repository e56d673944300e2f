import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BoundedFrequencyRunner, type Clock } from '../../src/sync/runner.js';
import { Tracker } from '../../src/sync/tracker.js';
import { service, slice } from '../support/fixtures.js';

/** A manual clock: timers fire only when the test advances time. */
class FakeClock implements Clock {
  t = 0;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private next = 1;
  now(): number { return this.t; }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(h: unknown): void { this.timers = this.timers.filter((x) => x.id !== h); }
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      for (let i = 0; i < 10; i++) await Promise.resolve();
      this.timers.sort((a, b) => a.at - b.at);
      const due = this.timers[0];
      if (due === undefined || due.at > end) break;
      this.timers.shift();
      this.t = due.at;
      due.fn();
    }
    this.t = end;
  }
}

function runner(clock: FakeClock, fn: () => Promise<void>, errors: number[] = []) {
  return new BoundedFrequencyRunner(fn, { minIntervalMs: 100, maxIntervalMs: 10_000, retryMinMs: 50, retryMaxMs: 400, clock, onError: (_e, ms) => errors.push(ms) });
}

test('runner: runs at start, coalesces a burst into one run, and respects the minimum interval', async () => {
  const clock = new FakeClock();
  const runs: number[] = [];
  const r = runner(clock, async () => { runs.push(clock.now()); });
  r.start();
  await clock.advance(0);
  assert.deepEqual(runs, [0]);
  for (let i = 0; i < 20; i++) r.run();
  await clock.advance(99);
  assert.deepEqual(runs, [0], 'no run before the minimum interval');
  await clock.advance(1);
  assert.deepEqual(runs, [0, 100], 'twenty requests, one run');
  await clock.advance(500);
  r.run();
  await clock.advance(0);
  assert.deepEqual(runs, [0, 100, 600], 'an idle runner runs a request at once');
  r.stop();
});

test('runner: periodic resync at the maximum interval', async () => {
  const clock = new FakeClock();
  const runs: number[] = [];
  const r = runner(clock, async () => { runs.push(clock.now()); });
  r.start();
  await clock.advance(25_000);
  assert.deepEqual(runs, [0, 10_000, 20_000]);
  r.stop();
  await clock.advance(20_000);
  assert.equal(runs.length, 3, 'a stopped runner runs no more');
});

test('runner: failures retry with exponential backoff capped at the maximum, and success resets it', async () => {
  const clock = new FakeClock();
  const runs: number[] = [];
  let failuresLeft = 5;
  const errors: number[] = [];
  const r = runner(clock, async () => {
    runs.push(clock.now());
    if (failuresLeft-- > 0) throw new Error('kernel said no');
  }, errors);
  r.start();
  await clock.advance(2000);
  assert.deepEqual(errors, [50, 100, 200, 400, 400]);
  assert.deepEqual(runs, [0, 50, 150, 350, 750, 1150]);
  assert.equal(r.consecutiveFailures, 0);
  r.stop();
});

test('runner: a request during a run causes exactly one more run after it', async () => {
  const clock = new FakeClock();
  let release: () => void = () => {};
  let calls = 0;
  const r = runner(clock, () => { calls++; return new Promise<void>((res) => { release = res; }); });
  r.start();
  await clock.advance(0);
  r.run(); r.run(); r.run();
  release();
  await clock.advance(100);
  assert.equal(calls, 2);
  release();
  await clock.advance(1000);
  assert.equal(calls, 2);
  r.stop();
});

test('tracker: marks the owning service of a slice dirty, handles a slice moving services, and counts changes', () => {
  const t = new Tracker('node-1', () => 42);
  t.handle({ type: 'upsert', object: service('a') });
  t.handle({ type: 'upsert', object: slice('x', 'a', [{ ip: '10.244.1.2' }]) });
  const p1 = t.take();
  assert.deepEqual([...p1.services], ['default/a']);
  assert.equal(p1.serviceChanges, 1);
  assert.equal(p1.endpointChanges, 1);
  assert.equal(p1.firstChangeAt.get('default/a'), 42);
  t.handle({ type: 'upsert', object: slice('x', 'b', [{ ip: '10.244.1.2' }]) });
  assert.deepEqual([...t.take().services].sort(), ['default/a', 'default/b']);
  assert.equal(t.slices.get('default/a'), undefined);
  assert.equal(t.slices.get('default/b')?.size, 1);
  assert.equal(t.handle({ type: 'delete', kind: 'EndpointSlice', key: 'EndpointSlice/default/x' }), true);
  assert.equal(t.slices.size, 0);
  assert.equal(t.handle({ type: 'delete', kind: 'EndpointSlice', key: 'EndpointSlice/default/x' }), false, 'a second delete changes nothing');
});

test('tracker: a relist (synced) removes what the list no longer holds; other nodes are ignored', () => {
  const t = new Tracker('node-1');
  t.handle({ type: 'upsert', object: service('a') });
  t.handle({ type: 'upsert', object: service('b', { clusterIP: '10.96.0.11' }) });
  assert.equal(t.ready, false);
  t.take();
  t.handle({ type: 'synced', kind: 'Service', keys: ['Service/default/a'] });
  t.handle({ type: 'synced', kind: 'EndpointSlice', keys: [] });
  assert.equal(t.ready, true);
  assert.deepEqual([...t.services.keys()], ['default/a']);
  assert.deepEqual([...t.take().services], ['default/b']);
  const other = { kind: 'Node' as const, name: 'node-2', zone: 'z', addresses: [], labels: {} };
  assert.equal(t.handle({ type: 'upsert', object: other }), false);
  assert.equal(t.handle({ type: 'upsert', object: { ...other, name: 'node-1' } }), true);
  assert.equal(t.take().nodeChanged, true);
});

test('runner: requests during a retry backoff do not bring the retry forward', async () => {
  const clock = new FakeClock();
  const runs: number[] = [];
  let fail = true;
  const r = runner(clock, async () => { runs.push(clock.now()); if (fail) throw new Error('no'); });
  r.start();
  await clock.advance(0);
  fail = false;
  for (let t = 0; t < 5; t++) { r.run(); await clock.advance(10); }
  assert.deepEqual(runs, [0, 50], 'the retry waits its 50 ms backoff however often a sync is requested');
  r.stop();
  await r.idle();
});

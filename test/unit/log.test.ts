import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../src/observe/log.js';

test('a field without a value is left out of a log line, in text and in JSON', () => {
  for (const json of [false, true]) {
    const lines: string[] = [];
    const log = createLogger({ level: 'info', json, sink: { write: (l) => lines.push(l) } });
    log.warn('sync failed', { error: new Error('boom'), detail: undefined, retryInMs: 1000 });
    assert.equal(lines.length, 1);
    assert.doesNotMatch(lines[0]!, /detail|undefined/, lines[0]);
    assert.match(lines[0]!, json ? /"retryInMs":1000/ : /retryInMs=1000/);
  }
});

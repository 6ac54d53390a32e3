import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  acceptsEvent,
  compareVersions,
  formatRange,
  formatVersion,
  negotiate,
  PROTOCOL,
  parseRange,
  type ProtocolRange,
  UNVERSIONED,
} from './protocol.ts';

const range = (text: string): ProtocolRange => parseRange(text)!;

describe('protocol versions', () => {
  it('reads and writes ranges, and refuses anything else', () => {
    assert.deepEqual(range('1.0-1.2'), { min: { major: 1, minor: 0 }, max: { major: 1, minor: 2 } });
    assert.deepEqual(range('1.3'), { min: { major: 1, minor: 3 }, max: { major: 1, minor: 3 } });
    assert.equal(formatRange(range('1.0-2.10')), '1.0-2.10');
    for (const bad of [
      '',
      '1',
      '1.',
      '.1',
      '1.2-1.1',
      '1.0-1.1-1.2',
      '1.0 - 1.1',
      'v1.0',
      '1.0.0',
      '99999.0',
      `1.0${' '.repeat(40)}`,
    ])
      assert.equal(parseRange(bad), undefined, bad);
  });

  it('reads any string a peer may send without throwing; what it takes, it writes back the same', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ maxLength: 40 }), fc.stringMatching(/^\d{1,5}\.\d{1,5}(-\d{1,5}\.\d{1,5})?$/)),
        (text) => {
          const r = parseRange(text);
          if (r) assert.deepEqual(parseRange(formatRange(r)), r);
        },
      ),
      { seed: 20261130, numRuns: 5000 },
    );
  });

  it('negotiates the highest version both speak, or none when the ranges do not overlap', () => {
    assert.deepEqual(negotiate(range('1.0-1.3'), range('1.2-1.5')), { major: 1, minor: 3 });
    assert.deepEqual(negotiate(range('1.0-1.0'), range('1.0-1.1')), { major: 1, minor: 0 });
    assert.deepEqual(negotiate(range('1.4-2.0'), range('1.2-1.4')), { major: 1, minor: 4 });
    assert.equal(negotiate(range('1.0-1.3'), range('1.4-1.5')), undefined);
    assert.equal(negotiate(range('2.0-2.1'), PROTOCOL), undefined);
  });

  it('negotiation is symmetric and lands inside both ranges', () => {
    const version = fc.record({
      major: fc.integer({ min: 1, max: 4 }),
      minor: fc.integer({ min: 0, max: 6 }),
    });
    const ranges = fc
      .tuple(version, version)
      .map(([a, b]) => (compareVersions(a, b) <= 0 ? { min: a, max: b } : { min: b, max: a }));
    fc.assert(
      fc.property(ranges, ranges, (a, b) => {
        const ab = negotiate(a, b);
        const ba = negotiate(b, a);
        assert.equal(ab && formatVersion(ab), ba && formatVersion(ba));
        if (!ab) return compareVersions(a.max, b.min) < 0 || compareVersions(b.max, a.min) < 0;
        for (const r of [a, b]) assert.ok(compareVersions(r.min, ab) <= 0 && compareVersions(ab, r.max) <= 0);
        return true;
      }),
      { seed: 20261130, numRuns: 2000 },
    );
  });

  it('takes events of any minor of a major it speaks, from its min up', () => {
    const r = range('1.2-1.4');
    assert.equal(acceptsEvent(r, { major: 1, minor: 9 }), true); // newer minor: processed
    assert.equal(acceptsEvent(r, { major: 1, minor: 2 }), true);
    assert.equal(acceptsEvent(r, { major: 1, minor: 1 }), false); // older than its min
    assert.equal(acceptsEvent(r, { major: 2, minor: 0 }), false); // a major it does not speak
  });

  it('this build speaks what builds before versions were advertised did', () => {
    assert.ok(negotiate(PROTOCOL, UNVERSIONED));
  });
});

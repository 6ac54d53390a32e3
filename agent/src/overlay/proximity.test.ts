import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hopClass, rankByCost } from './proximity.ts';

const self = { id: 'me', zone: 'eu-a', region: 'eu' };

describe('proximity', () => {
  it('classes peers by topology, never matching empty labels', () => {
    assert.equal(hopClass(self, self), 'node');
    assert.equal(hopClass(self, { id: 'x', zone: 'eu-a', region: 'eu' }), 'zone');
    assert.equal(hopClass(self, { id: 'x', zone: 'eu-b', region: 'eu' }), 'region');
    assert.equal(hopClass(self, { id: 'x', zone: 'eu-a', region: 'us' }), 'remote');
    const unlabelled = { id: 'u', zone: '', region: '' };
    assert.equal(hopClass(unlabelled, { id: 'v', zone: '', region: '' }), 'remote');
    assert.equal(hopClass({ ...self, zone: '' }, { id: 'x', zone: '', region: 'eu' }), 'region');
  });

  it('orders same zone, same region, elsewhere; then by RTT and load within a class', () => {
    const ranked = rankByCost(self, [
      { id: 'far-fast', zone: 'us-a', region: 'us', rttMs: 1 },
      { id: 'region-slow', zone: 'eu-b', region: 'eu', rttMs: 30 },
      { id: 'zone-busy', zone: 'eu-a', region: 'eu', rttMs: 2, load: 1 },
      { id: 'zone-idle', zone: 'eu-a', region: 'eu', rttMs: 3, load: 0 },
      { id: 'zone-unknown', zone: 'eu-a', region: 'eu' },
      { id: 'region-fast', zone: 'eu-c', region: 'eu', rttMs: 5 },
    ]);
    assert.deepEqual(
      ranked.map((c) => c.id),
      ['zone-idle', 'zone-busy', 'zone-unknown', 'region-fast', 'region-slow', 'far-fast'],
    );
  });
});

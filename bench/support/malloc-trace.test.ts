import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseLeaks } from './malloc-trace.ts';

// heaptrack_print 1.4's leak list as it prints it (cut down from a soak's recording): merged call
// sites (no colon) with their function on the next line, each followed by its callers (with one).
const PRINTED = `MEMORY LEAKS
338.82M leaked over 3580541 calls from
node::NodeArrayBufferAllocator::AllocateUninitialized(unsigned long)
  in /usr/bin/node
168.39M leaked over 632 calls from:
    v8::internal::Heap::AllocateExternalBackingStore(std::function<> const&, unsigned long)
8.67M leaked over 6746 calls from
node::crypto::NodeBIO::TryAllocateForWrite(unsigned long)
8.56M leaked over 172 calls from:
    node::crypto::NodeBIO::Write(char const*, unsigned long)
3.93M leaked over 31241045 calls from
CRYPTO_zalloc
349.44K leaked over 1812 calls from:
    ossl_ssl_init
655.84K leaked over 2592 calls from
node::crypto::NodeBIO::PeekWritable(unsigned long*)
286B leaked over 1 calls from
uv__malloc

total runtime: 1471.22s.
calls to allocation functions: 95220309 (64722/s)
total memory leaked: 368.77M
suppressed leaks: 44.77K
`;

describe('parseLeaks', () => {
  it('groups heaptrack_print’s live allocations into Buffers, TLS buffers and the rest', () => {
    const live = parseLeaks(PRINTED);
    assert.equal(live.total, 368.77);
    assert.equal(live.buffers, 338.82);
    assert.ok(Math.abs(live.tls - (8.67 + 0.65584)) < 1e-9, String(live.tls));
    assert.ok(Math.abs(live.other - (368.77 - 338.82 - 8.67 - 0.65584)) < 1e-9, String(live.other));
    // Callers (lines with a colon) are not counted again; sizes in K and B are read in MB.
    assert.deepEqual(live.top, [
      { site: 'CRYPTO_zalloc', mb: 3.93 },
      { site: 'uv__malloc', mb: 0.000286 },
    ]);
    assert.equal(live.calls, 95220309);
    assert.equal(live.runtimeS, 1471.22);
  });

  it('reads no total as NaN rather than as nothing allocated', () => {
    assert.ok(Number.isNaN(parseLeaks('MEMORY LEAKS\n').total));
  });
});

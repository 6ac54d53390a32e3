import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Metadata } from '@grpc/grpc-js';
import { PROTOCOL, PROTOCOL_METADATA } from '@edgemesh/contracts';
import type { Logger } from '../telemetry/logger.ts';
import { versionGuarded } from './version-guard.ts';

describe('versionGuarded', () => {
  it('logs a refused caller once, whatever range it advertises from whichever port (it chooses both)', () => {
    const lines: unknown[] = [];
    let refused = 0;
    let handled = 0;
    const guarded = versionGuarded(
      {
        ours: PROTOCOL,
        logger: { warn: (fields: unknown) => lines.push(fields) } as unknown as Logger,
        refused: () => refused++,
        callerOf: () => undefined, // plaintext: no authenticated node, so its address is the caller
      },
      {
        Ping: (_call: unknown, _done: unknown) => {
          handled++;
        },
      },
    );
    for (let i = 0; i < 500; i++) {
      const metadata = new Metadata();
      metadata.set(PROTOCOL_METADATA, `9.${i}`);
      const call = { metadata, getPeer: () => `ipv4:192.0.2.7:${40000 + i}`, emit: () => undefined };
      guarded.Ping(call, () => undefined);
    }
    assert.equal(handled, 0, 'no refused call reaches the handler');
    assert.equal(refused, 500, 'every refusal counted');
    assert.equal(lines.length, 1, 'one line for the caller');
  });
});

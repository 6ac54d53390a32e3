import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { AGENT_NODE_FLAGS } from './node-flags.ts';

describe('the agent’s Node flags (node-flags.ts)', () => {
  it('make V8 optimize one function at a time on the main thread, never queued for the background', () => {
    // Under the agent's flags: a function called often enough for Maglev and then TurboFan, and one
    // long loop, replaced on the stack while it runs (OSR). V8 says how it compiled each.
    const hot =
      'function f(x) { let s = 0; for (let i = 0; i < 1000; i++) s += i * x; return s; }' +
      'let t = 0; for (let i = 0; i < 20000; i++) t += f(i);' +
      'function g() { let s = 0; for (let i = 0; i < 3e6; i++) s += i % 7; return s; }' +
      'if (!(t > 0 && g() > 0)) process.exit(1);';
    const trace = execFileSync(process.execPath, [...AGENT_NODE_FLAGS, '--trace-opt', '-e', hot], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    const compiled = trace.split('\n').filter((l) => l.startsWith('[compiling method'));
    for (const kind of [/\(target MAGLEV\)/, /\(target TURBOFAN_JS\)/, / OSR, /])
      assert.ok(
        compiled.some((l) => kind.test(l)),
        `no compilation matching ${kind}:\n${trace}`,
      );
    for (const line of compiled) assert.match(line, /ConcurrencyMode::kSynchronous/, line);
  });
});

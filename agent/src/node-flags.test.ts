import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { AGENT_NODE_FLAGS } from './node-flags.ts';

describe('the agent’s Node flags (node-flags.ts)', () => {
  it('make V8 optimize one function at a time on the main thread, never queued for the background', () => {
    // A function hot enough for TurboFan, under the agent's flags: V8 says how it compiled it.
    const hot =
      'function f(x) { let s = 0; for (let i = 0; i < 1000; i++) s += i * x; return s; }' +
      'let t = 0; for (let i = 0; i < 20000; i++) t += f(i); if (!(t > 0)) process.exit(1);';
    const trace = execFileSync(process.execPath, [...AGENT_NODE_FLAGS, '--trace-opt', '-e', hot], {
      encoding: 'utf8',
    });
    const compiled = trace.split('\n').filter((l) => l.startsWith('[compiling method'));
    assert.ok(compiled.length > 0, `V8 optimized nothing:\n${trace}`);
    for (const line of compiled) assert.match(line, /ConcurrencyMode::kSynchronous/, line);
  });
});

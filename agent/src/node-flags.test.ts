import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { AGENT_NODE_FLAGS, memoryReducerOff, NO_MEMORY_REDUCER } from './node-flags.ts';

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

  it('keep V8 from reducing memory on its own once the agent has compacted while quiet', async (t) => {
    // A process with some 15 MB live, compacted once by quiet-compaction.ts's own code: without
    // --no-memory-reducer, V8 starts collections of its own about 8 s later, and in every lull after
    // that (node-flags.ts says why and what it cost). The same script runs with and without the
    // flag, side by side; the one without ends once V8 says it started one (or after 60 s, failing),
    // and the agent's is ended then: with the flag V8 has no reducer to trace at all.
    const script = `
      import { compactWhenQuiet } from ${JSON.stringify(new URL('./quiet-compaction.ts', import.meta.url).href)};
      const kept = Array.from({ length: 200000 }, (_, i) => ({ i, s: 'x' + i }));
      compactWhenQuiet({
        periodMs: 20, quietPeriods: 1, maxUtilization: 1, workDone: () => 0, minGrowthBytes: 0,
        minIntervalMs: 1e9, maxHeapBytes: 2 ** 40,
        onCompacted: () => console.log('compacted', kept.length),
        onError: (error) => { console.error(error); process.exit(1); },
      });
      setTimeout(() => process.exit(2), 60000);`;
    const start = (flags: readonly string[]) => {
      const child = spawn(
        process.execPath,
        [...flags, '--trace-memory-reducer', '--input-type=module', '-e', script],
        { stdio: ['ignore', 'pipe', 'inherit'], signal: t.signal },
      );
      let out = '';
      child.stdout.on('data', (d) => {
        out += String(d);
      });
      return { child, out: () => out, closed: once(child, 'close') };
    };
    const agent = start(AGENT_NODE_FLAGS);
    const without = start(AGENT_NODE_FLAGS.filter((f) => f !== NO_MEMORY_REDUCER));
    const started = new Promise<void>((resolve) => {
      const look = () => {
        if (/Memory reducer: started GC/.test(without.out())) {
          without.child.stdout.off('data', look);
          resolve();
        }
      };
      without.child.stdout.on('data', look);
    });
    await Promise.race([started, without.closed]);
    without.child.kill();
    agent.child.kill();
    await Promise.all([without.closed, agent.closed]);
    // Without the flag V8 does start one, so with the agent's flags it is the flag that keeps it still.
    assert.match(without.out(), /compacted 200000[\s\S]*Memory reducer: started GC/, without.out());
    assert.match(agent.out(), /compacted 200000/, agent.out());
    assert.doesNotMatch(agent.out(), /Memory reducer/, agent.out());
  });

  it('read the memory reducer off from the command line as V8 does: the last of its flags, any spelling', () => {
    assert.equal(memoryReducerOff(AGENT_NODE_FLAGS), true);
    assert.equal(memoryReducerOff([]), false);
    for (const off of [
      '--no-memory-reducer',
      '--no_memory_reducer',
      '--nomemory-reducer',
      '--memory-reducer=false',
    ])
      assert.equal(memoryReducerOff(['--max-semi-space-size=1', off]), true, off);
    for (const on of [
      ['--no-memory-reducer', '--memory-reducer'],
      ['--no-memory-reducer', '--memory_reducer=true'],
      ['--memory-reducer-gc-count=3'], // another flag
      ['--no-memory-reducer-for-small-heaps'],
    ])
      assert.equal(memoryReducerOff(on), false, on.join(' '));
  });
});

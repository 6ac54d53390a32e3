import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
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

  it('keep V8 from reducing memory on its own after the quiet compaction’s collection', async () => {
    // A process with some 15 MB live asks for the collection quiet-compaction.ts asks for, then
    // waits: without --no-memory-reducer V8 starts collections of its own about 8 s later, and every
    // lull after that (node-flags.ts). Traced, the same script with and without the flag; each ends
    // after 20 s, or once V8 says it has started one.
    const script = `
      import { setFlagsFromString } from 'node:v8';
      import { runInNewContext } from 'node:vm';
      setFlagsFromString('--expose-gc');
      const gc = runInNewContext('gc');
      setFlagsFromString('--no-expose-gc');
      const kept = Array.from({ length: 200000 }, (_, i) => ({ i, s: 'x' + i }));
      gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
      setTimeout(() => console.log('kept', kept.length), 20000);`;
    const traced = async (flags: readonly string[]) => {
      const child = spawn(
        process.execPath,
        [...flags, '--trace-memory-reducer', '--input-type=module', '-e', script],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let out = '';
      child.stdout.on('data', (d) => {
        out += String(d);
        if (/Memory reducer: started GC/.test(out)) child.kill();
      });
      await once(child, 'exit');
      return out;
    };
    const [agent, without] = await Promise.all([
      traced(AGENT_NODE_FLAGS),
      traced(AGENT_NODE_FLAGS.filter((f) => f !== '--no-memory-reducer')),
    ]);
    // Without the flag V8 does start one, so with the agent's flags it is the flag that keeps it still.
    assert.match(without, /Memory reducer: started GC/, without);
    assert.doesNotMatch(agent, /Memory reducer/, agent);
    assert.match(agent, /kept 200000/, agent);
  });
});

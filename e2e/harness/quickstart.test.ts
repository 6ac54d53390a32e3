import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { commandsOf, parseQuickStart, QUICKSTART, readQuickStart } from './quickstart.ts';

const doc = (...lines: string[]) => lines.join('\n');
const commands = (markdown: string) => commandsOf(parseQuickStart(markdown)).map((c) => c.command);

describe('the quick start harness', () => {
  it('reads docs/quickstart.md into its sections, each command whole and at its line', () => {
    const sections = readQuickStart();
    assert.deepEqual(
      sections.map((s) => s.title),
      [
        '1. A cluster and the image',
        '2. The operator, its CRD and NATS',
        '3. A mesh',
        '4. Put and get an object',
        'Uninstall',
      ],
    );
    const file = readFileSync(QUICKSTART, 'utf8').split('\n');
    for (const { command, line } of commandsOf(sections)) {
      assert.doesNotMatch(
        command,
        /\s#|\\$|\n/,
        `${command}: a comment, a continuation or a newline is left`,
      );
      const firstWord = command.split(' ')[0] ?? '';
      assert.ok(file[line - 1]?.startsWith(firstWord), `line ${line} starts ${command}`);
    }
    const install = sections[1]?.commands[0]?.command;
    assert.equal(
      install,
      "helm install edgemesh charts/edgemesh -n edgemesh-system --create-namespace --set nats.enabled=true --set 'meshNamespaces={default}' --wait",
    );
    assert.equal(sections[0]?.commands[0]?.command, 'kind create cluster --name edgemesh');
  });

  it('joins continuations as sh does and keeps what only looks like a comment', () => {
    const md = doc(
      '# Title',
      '## One',
      '```sh',
      'helm install x \\',
      "  --set 'a={b}' \\",
      '  --wait   # waits',
      'echo \'not # a comment\' "nor # this" a#b',
      '',
      '# a comment line',
      'cat file |',
      '  grep x && \\',
      'echo ok',
      'echo joined\\',
      'word',
      '```',
      '```yaml',
      'not: a command # at all',
      '```',
      '## Two',
      'Text `like this`, and a heading-looking line in a block:',
      '```bash',
      'x=$(kubectl get pods -o name)   # the pods',
      '```',
    );
    assert.deepEqual(parseQuickStart(md), [
      {
        title: 'One',
        commands: [
          { command: "helm install x --set 'a={b}' --wait", line: 4 },
          { command: 'echo \'not # a comment\' "nor # this" a#b', line: 7 },
          { command: 'cat file | grep x && echo ok', line: 10 },
          { command: 'echo joinedword', line: 13 },
        ],
      },
      { title: 'Two', commands: [{ command: 'x=$(kubectl get pods -o name)', line: 22 }] },
    ]);
  });

  it('refuses what it cannot split into commands, naming the line', () => {
    const block = (...lines: string[]) => doc('## S', '```sh', ...lines, '```');
    assert.throws(() => commands(block('cat <<EOF', 'x', 'EOF')), /line 3: a heredoc/);
    assert.throws(() => commands(block("echo 'open", "quote'")), /line 3: a ' quote left open/);
    assert.throws(() => commands(block('for n in a b; do', 'echo $n', 'done')), /line 3: a compound command/);
    assert.throws(() => commands(block('echo \\')), /line 3: the command goes on past its block/);
    assert.throws(() => commands(doc('## S', '```sh', 'echo')), /line 2: a code block that never closes/);
  });
});

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './images.ts';

/** The user's quick start. */
export const QUICKSTART = join(ROOT, 'docs', 'quickstart.md');

/** One command of the quick start, as a user types it into a shell. */
export interface QuickStartCommand {
  /** The command: continuation lines joined, a trailing `# comment` removed. */
  command: string;
  /** Where it starts in the file (1-based). */
  line: number;
}

/** The commands under one heading, in order. */
export interface QuickStartSection {
  /** The heading's text, e.g. `2. The operator, its CRD and NATS`. */
  title: string;
  commands: QuickStartCommand[];
}

/** Fenced code blocks in these languages are shell commands; every other block is left alone. */
const SHELL_LANGUAGES = new Set(['sh', 'shell', 'bash', 'zsh']);
const FENCE = /^```\s*([\w-]*)\s*$/;
const HEADING = /^#{1,6}\s+(.*?)\s*#*\s*$/;
/** A line ending in one of these goes on on the next line in sh (a pipeline or list left open). */
const OPEN_OPERATOR = /(\|\||&&|\|)$/;
/** A compound command left open at the end of a line: the harness runs one line at a time. */
const OPEN_COMPOUND = /(^|[\s;])(do|then|else|\{|\()$/;

/**
 * The shell commands of a Markdown document, grouped by the heading they sit under, in order:
 * every ```sh (or shell, bash, zsh) block, each command with backslash continuations and lines
 * ending in `|`, `&&` or `||` joined, trailing comments removed, blank lines and comment lines left
 * out. Throws, naming the line, on what it cannot split into commands (a heredoc, a quote or a
 * compound command left open at the end of a line, a block that never closes).
 */
export function parseQuickStart(markdown: string): QuickStartSection[] {
  const sections: QuickStartSection[] = [];
  let title = '';
  let block: { language: string; line: number } | undefined;
  let pending: { text: string; line: number } | undefined;
  const lines = markdown.split('\n');
  lines.forEach((raw, index) => {
    const line = index + 1;
    const fence = FENCE.exec(raw);
    if (!block) {
      if (fence) block = { language: fence[1] ?? '', line };
      else title = HEADING.exec(raw)?.[1] ?? title;
      return;
    }
    if (fence && fence[1] === '') {
      if (pending) throw new Error(`quick start line ${pending.line}: the command goes on past its block`);
      block = undefined;
      return;
    }
    if (!SHELL_LANGUAGES.has(block.language)) return;
    const { text, quote } = withoutComment(raw);
    if (quote) throw new Error(`quick start line ${line}: a ${quote} quote left open at the end of the line`);
    if (/(^|[^<])<<([^<]|$)/.test(text)) throw new Error(`quick start line ${line}: a heredoc`);
    const joined = pending ? joinLines(pending.text, text) : text.trim();
    const start = pending?.line ?? line;
    pending = undefined;
    if (joined === '') return;
    if (joined.endsWith('\\')) pending = { text: joined.slice(0, -1), line: start };
    else if (OPEN_OPERATOR.test(joined)) pending = { text: `${joined} `, line: start };
    else if (OPEN_COMPOUND.test(joined))
      throw new Error(`quick start line ${line}: a compound command goes on on the next line`);
    else sectionNamed(sections, title).commands.push({ command: joined, line: start });
  });
  if (block) throw new Error(`quick start line ${block.line}: a code block that never closes`);
  return sections;
}

/** The quick start's commands, as parseQuickStart gives them. */
export function readQuickStart(file: string = QUICKSTART): QuickStartSection[] {
  return parseQuickStart(readFileSync(file, 'utf8'));
}

function sectionNamed(sections: QuickStartSection[], title: string): QuickStartSection {
  const last = sections.at(-1);
  if (last?.title === title) return last;
  const section = { title, commands: [] };
  sections.push(section);
  return section;
}

/**
 * A backslash-newline vanishes in sh, so `a \` + `  b` is `a b` and `a\` + `b` is `ab`: the words
 * stay as sh sees them, with the continuation line's indentation folded into one space.
 */
function joinLines(before: string, after: string): string {
  const spaced = /\s$/.test(before) || /^\s/.test(after);
  return `${before.trimEnd()}${spaced ? ' ' : ''}${after.trim()}`;
}

/**
 * The line without its comment: a `#` that starts a word outside quotes, as sh reads it. `quote` is
 * the quote still open at the end of the line, if any.
 */
function withoutComment(line: string): { text: string; quote?: "'" | '"' } {
  let quote: "'" | '"' | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote === "'") {
      if (c === "'") quote = undefined;
    } else if (c === '\\') {
      i++;
    } else if (quote === '"') {
      if (c === '"') quote = undefined;
    } else if (c === "'" || c === '"') {
      quote = c;
    } else if (c === '#' && (i === 0 || /[\s;&|()<>]/.test(line[i - 1] ?? ''))) {
      return { text: line.slice(0, i).trimEnd() };
    }
  }
  return quote ? { text: line, quote } : { text: line.trimEnd() };
}

/** Every command of the sections, in order, with the title of its section. */
export function commandsOf(sections: QuickStartSection[]): (QuickStartCommand & { section: string })[] {
  return sections.flatMap((s) => s.commands.map((c) => ({ ...c, section: s.title })));
}

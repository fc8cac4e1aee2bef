import type { YAMLError } from 'yaml';
import type { Segment } from './yaml-document.js';

/** A YAML syntax error said for an operator: where the mistake is, under which key, and what to do. */
export interface SyntaxProblem {
  offset: number;
  path: Segment[];
  message: string;
}

/**
 * The parser reports where it gave up, which is often a line or more after the mistake (an
 * unclosed bracket is noticed at the next key), in its own words. This finds the line that
 * holds the mistake for the common ones and says it plainly; anything else keeps the parser's
 * words, at its position.
 */
export function explainSyntaxError(text: string, error: YAMLError): SyntaxProblem {
  const lines = new SourceLines(text);
  const at = lines.lineOf(error.pos[0]);
  const explained = unquotedVariable(lines, at, error) ?? unclosed(lines, at, error) ?? indentedUnderValue(lines, at, error) ?? listItemAmongKeys(lines, at, error);
  if (explained) return explained;
  if (error.code === 'TAB_AS_INDENT') {
    return { offset: error.pos[0], path: [], message: 'a tab indents this line; YAML indents with spaces only' };
  }
  if (error.code === 'BAD_INDENT' && /same column/.test(error.message)) {
    const line = lines.firstToken(at);
    return { offset: line.offset, path: [], message: `this key starts in column ${line.column}, in line with no mapping above it; the keys of one mapping start in the same column` };
  }
  if (error.code === 'MULTIPLE_DOCS') {
    return { offset: error.pos[0], path: [], message: 'the file holds more than one YAML document (a --- separator); keep the whole config in one' };
  }
  return { offset: error.pos[0], path: [], message: `not valid YAML: ${error.message.split('\n')[0]!}` };
}

/** `{ port: ${PORT} }`: braces end a flow mapping, so `${…}` inside one must be quoted. */
function unquotedVariable(lines: SourceLines, at: number, error: YAMLError): SyntaxProblem | undefined {
  const text = lines.text(at);
  const variable = /[{[].*?(\$\{[^}]*\})/.exec(text);
  if (!variable || text.includes(`"${variable[1]}"`)) return undefined;
  return {
    offset: error.pos[0],
    path: pathAtLine(lines, at),
    message: `inside { } or [ ], a value that uses \${…} must be quoted: "${variable[1]}"`,
  };
}

/** A quote or bracket opened on an earlier line and never closed: the parser notices at the end. */
function unclosed(lines: SourceLines, at: number, error: YAMLError): SyntaxProblem | undefined {
  const quote = /^Missing closing ("|')quote/.exec(error.message)?.[1];
  const bracket = /end with a ([}\]])/.exec(error.message)?.[1];
  if (quote === undefined && bracket === undefined) return undefined;
  for (let line = Math.min(at, lines.count - 1); line >= 0; line--) {
    const opener = quote !== undefined ? openQuote(lines.text(line), quote) : openBracket(lines.text(line), bracket === '}' ? '{' : '[', bracket!);
    if (opener === undefined) continue;
    const what = quote !== undefined ? `this ${quote}…${quote} string is never closed: add the closing ${quote}` : `this ${bracket === '}' ? '{' : '['} is never closed: end it with ${bracket} on the same line`;
    return { offset: lines.start(line) + opener, path: pathAtLine(lines, line), message: what };
  }
  return undefined;
}

/** Column (0-based) of a quote left open at the end of the line, outside comments. */
function openQuote(line: string, quote: string): number | undefined {
  let inside: string | undefined;
  let start = 0;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (inside === undefined) {
      if (c === '#' && (i === 0 || line[i - 1] === ' ')) break;
      if (c === '"' || c === "'") {
        inside = c;
        start = i;
      }
    } else if (c === inside && !(c === '"' && line[i - 1] === '\\')) {
      inside = undefined;
    }
  }
  return inside === quote ? start : undefined;
}

/** Column (0-based) of the last bracket the line opens and does not close, outside quotes and comments. */
function openBracket(line: string, opener: string, closer: string): number | undefined {
  const open: number[] = [];
  let quote: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote !== undefined) {
      if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === '#' && (i === 0 || line[i - 1] === ' ')) {
      break;
    } else if (c === opener) {
      open.push(i);
    } else if (c === closer) {
      open.pop();
    }
  }
  return open.at(-1);
}

/**
 * `key: value` followed by a line indented deeper: YAML reads that line as more of the value
 * (a plain scalar may span lines), then fails on what follows. The natural first edit that does
 * it: appending a route below `defaultRoute: publish`.
 */
function indentedUnderValue(lines: SourceLines, at: number, error: YAMLError): SyntaxProblem | undefined {
  if (error.code !== 'BLOCK_AS_IMPLICIT_KEY' && error.code !== 'MULTILINE_IMPLICIT_KEY') return undefined;
  const owner = lines.parse(at);
  if (!owner.key || !owner.hasValue) return undefined;
  const next = lines.nextToken(at);
  if (next === undefined || lines.parse(next).column <= owner.key.column) return undefined;
  const token = lines.firstToken(next);
  const item = lines.parse(next).dash !== undefined;
  const hint = item
    ? `; to add an item to a list such as routes:, put it under that key, lined up with the items already there`
    : `; a key of its own starts in the column of "${owner.key.name}"`;
  return {
    offset: token.offset,
    path: pathAtLine(lines, at),
    message: `this line is indented under "${lines.text(at).trim()}" (line ${at + 1}), so YAML reads it as more of that value${hint}`,
  };
}

/** `- item` in the column of the mapping keys around it: a list item where a key must be. */
function listItemAmongKeys(lines: SourceLines, at: number, error: YAMLError): SyntaxProblem | undefined {
  if (error.code !== 'MULTILINE_IMPLICIT_KEY' && error.code !== 'UNEXPECTED_TOKEN') return undefined;
  const line = lines.parse(at);
  if (line.dash === undefined) return undefined;
  const previous = lines.previousToken(at);
  if (previous === undefined) return undefined;
  const before = lines.parse(previous);
  if (before.key === undefined || before.column !== line.dash) return undefined;
  const parent = pathAtLine(lines, previous).slice(0, -1);
  return {
    offset: lines.firstToken(at).offset,
    path: parent,
    message: `a list item among the keys of ${parent.length === 0 ? 'the top level' : 'a mapping'}; to add an item to a list such as routes:, indent it under that key, lined up with the items already there`,
  };
}

/** What the start of a block line holds: a sequence dash and/or a `key:`, with their columns (0-based). */
interface LineHead {
  /** column of the first token; -1 for a blank or comment line */
  column: number;
  dash?: number;
  key?: { name: string; column: number };
  /** the key has something after it on the same line */
  hasValue: boolean;
}

const HEAD = /^( *)(?:(-)( +|$))?(?:(?:"([^"]*)"|'([^']*)'|([^\s"'#:{}[\],][^#:{}[\],]*?)):(?: +(\S)|$))?/;

class SourceLines {
  readonly #starts: number[] = [0];
  readonly #text: string;

  constructor(text: string) {
    this.#text = text;
    for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) this.#starts.push(i + 1);
  }

  get count(): number {
    return this.#starts.length;
  }

  start(line: number): number {
    return this.#starts[line]!;
  }

  text(line: number): string {
    const end = this.#starts[line + 1];
    return this.#text.slice(this.#starts[line], end === undefined ? undefined : end - 1).replace(/\r$/, '');
  }

  /** 0-based line of an offset; an offset at the very end belongs to the last line with text. */
  lineOf(offset: number): number {
    let line = this.#starts.findLastIndex((start) => start <= offset);
    while (line > 0 && this.text(line).trim() === '') line--;
    return Math.max(0, line);
  }

  parse(line: number): LineHead {
    const text = this.text(line);
    const trimmed = text.trimStart();
    if (trimmed === '' || trimmed.startsWith('#')) return { column: -1, hasValue: false };
    const m = HEAD.exec(text)!;
    const indent = m[1]!.length;
    const head: LineHead = { column: indent, hasValue: m[7] !== undefined && m[7] !== '#' };
    if (m[2] !== undefined) head.dash = indent;
    const name = m[4] ?? m[5] ?? m[6];
    if (name !== undefined) {
      head.key = { name, column: indent + (m[2] !== undefined ? 1 + m[3]!.length : 0) };
    }
    return head;
  }

  firstToken(line: number): { offset: number; column: number } {
    const column = Math.max(0, this.parse(line).column);
    return { offset: this.start(line) + column, column: column + 1 };
  }

  nextToken(line: number): number | undefined {
    for (let next = line + 1; next < this.count; next++) if (this.parse(next).column >= 0) return next;
    return undefined;
  }

  previousToken(line: number): number | undefined {
    for (let previous = line - 1; previous >= 0; previous--) if (this.parse(previous).column >= 0) return previous;
    return undefined;
  }
}

/**
 * The key path of a line from indentation alone, for a document the parser could not build:
 * each enclosing key is the nearest line above with a key further left, each list index the
 * count of dashes above in the item's column.
 */
function pathAtLine(lines: SourceLines, at: number): Segment[] {
  const path: Segment[] = [];
  const own = lines.parse(at);
  let column = Infinity;
  if (own.key) {
    path.push(own.key.name);
    column = own.key.column;
  }
  const enter = (line: number, head: LineHead): void => {
    if (head.dash === undefined || head.dash >= column) return;
    let index = 0;
    for (let previous = line - 1; previous >= 0; previous--) {
      const above = lines.parse(previous);
      if (above.column < 0) continue;
      if (above.column < head.dash) break;
      if (above.dash === head.dash) index++;
    }
    path.unshift(index);
    column = head.dash;
  };
  enter(at, own);
  column = Math.min(column, own.column);
  for (let line = at - 1; line >= 0 && column > 0; line--) {
    const head = lines.parse(line);
    if (head.column < 0 || head.column >= column) continue;
    if (head.key && head.key.column < column) {
      path.unshift(head.key.name);
      column = head.key.column;
    }
    enter(line, head);
  }
  return path;
}

import { LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import { ConfigError, type ConfigIssue } from './types.js';
import { explainSyntaxError } from './yaml-syntax.js';

/** A step into the document: a mapping key or a list index. */
export type Segment = string | number;

/**
 * Parses one YAML document, keeping what is needed to position issues in it. A syntax error
 * ends the load here with that one error, said plainly (./yaml-syntax.ts): the parser
 * resynchronises badly after it, so what it reports next (a duplicate key, more syntax errors)
 * is mostly an echo of the first. Duplicate keys alone leave a usable document.
 */
export function parseConfigYaml(text: string, file: string): Reporter {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, merge: true });
  const report = new Reporter(file || '<config>', doc, lineCounter);

  const syntaxError = doc.errors.find((e) => e.code !== 'DUPLICATE_KEY');
  if (syntaxError) {
    const problem = explainSyntaxError(text, syntaxError);
    report.atOffset(problem.offset, problem.message, false, problem.path);
    throw new ConfigError(report.sortedErrors());
  }
  for (const warning of doc.warnings) report.atOffset(warning.pos[0], warning.message, true);
  for (const error of doc.errors) {
    const name = pathAtOffset(doc, error.pos[0]).at(-1);
    report.atOffset(error.pos[0], typeof name === 'string' ? `duplicate key "${name}"` : 'duplicate key', false);
  }
  return report;
}

/** Issues found in one document, each positioned by key path or by offset. */
export class Reporter {
  readonly errors: ConfigIssue[] = [];
  readonly warnings: ConfigIssue[] = [];
  private readonly seen = new Set<string>();

  constructor(
    private readonly file: string,
    readonly doc: Document.Parsed,
    private readonly lineCounter: LineCounter,
  ) {}

  /** `onKey`: point at the key of the last segment rather than at its value. */
  at(segments: readonly Segment[], message: string, options: { onKey?: boolean; warning?: boolean } = {}): void {
    const place = locate(this.doc, segments);
    const node = options.onKey || place.value === undefined || isEmpty(place.value) ? place.key ?? place.value : place.value;
    this.push(node?.range?.[0], formatPath(segments), message, options.warning ?? false);
  }

  /** `path` when it is known otherwise, as when the document around the offset cannot be trusted to name it. */
  atOffset(offset: number, message: string, warning: boolean, path?: readonly Segment[]): void {
    this.push(offset, formatPath(path ?? pathAtOffset(this.doc, offset)), message, warning);
  }

  sortedErrors(): ConfigIssue[] {
    return sortIssues(this.errors);
  }

  sortedWarnings(): ConfigIssue[] {
    return sortIssues(this.warnings);
  }

  private push(offset: number | undefined, issuePath: string, message: string, warning: boolean): void {
    const pos = offset === undefined ? { line: 0, col: 0 } : this.lineCounter.linePos(offset);
    const issue: ConfigIssue = { file: this.file, line: pos.line, column: pos.col, path: issuePath, message };
    // allErrors can report one mistake through several keywords (type and maximum) with one wording
    const id = `${warning}:${issue.line}:${issue.column}:${issuePath}:${message}`;
    if (this.seen.has(id)) return;
    this.seen.add(id);
    (warning ? this.warnings : this.errors).push(issue);
  }
}

function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return [...issues].sort((a, b) => a.line - b.line || a.column - b.column);
}

interface Place {
  /** the deepest node reached; undefined when the document is empty */
  value?: YamlNode;
  /** the key node of the last mapping step taken */
  key?: YamlNode;
  /** every segment was found */
  complete: boolean;
}

export function locate(doc: Document.Parsed, segments: readonly Segment[]): Place {
  let value: YamlNode | undefined = doc.contents ?? undefined;
  let key: YamlNode | undefined;
  for (const segment of segments) {
    const node = isAlias(value) ? value.resolve(doc) : value;
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segment));
      if (!pair) return { value, key, complete: false };
      key = pair.key as YamlNode;
      // `key:` with nothing after it has no value node to point at; the key stands in
      value = (pair.value as YamlNode | null) ?? undefined;
      if (value === undefined) return { key, complete: true };
    } else if (isSeq(node) && typeof segment === 'number' && segment < node.items.length) {
      key = undefined;
      value = node.items[segment] as YamlNode;
    } else {
      return { value, key, complete: false };
    }
  }
  return { value, key, complete: true };
}

function isEmpty(node: YamlNode): boolean {
  return isScalar(node) && node.value === null && node.source === '';
}

/** The key path of the innermost node containing `offset`, for issues that arrive as offsets. */
function pathAtOffset(doc: Document.Parsed, offset: number): Segment[] {
  const segments: Segment[] = [];
  let node: unknown = doc.contents;
  for (;;) {
    if (isMap(node)) {
      const pair = node.items.find((p) => {
        const start = (p.key as YamlNode | null)?.range?.[0];
        const end = (p.value as YamlNode | null)?.range?.[2] ?? (p.key as YamlNode | null)?.range?.[2];
        return start !== undefined && end !== undefined && start <= offset && offset < end;
      });
      if (!pair || !isScalar(pair.key)) return segments;
      segments.push(String(pair.key.value));
      node = pair.value;
    } else if (isSeq(node)) {
      const index = node.items.findIndex((item) => {
        const range = (item as YamlNode | null)?.range;
        return range ? range[0] <= offset && offset < range[2] : false;
      });
      if (index < 0) return segments;
      segments.push(index);
      node = node.items[index];
    } else {
      return segments;
    }
  }
}

/** `routes[1].match.key`; names that are not plain words are quoted: `targets["a b"]`. */
function formatPath(segments: readonly Segment[]): string {
  let out = '';
  for (const segment of segments) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else if (/^[A-Za-z0-9_$-]+$/.test(segment)) out += out === '' ? segment : `.${segment}`;
    else out += `[${JSON.stringify(segment)}]`;
  }
  return out;
}

/** A mapping, as YAML data holds them. */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}


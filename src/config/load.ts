import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import { Value } from '@sinclair/typebox/value';
import { LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import {
  BUILTIN_TARGETS,
  GatewayConfigSchema,
  GrpcTargetSchema,
  HttpTargetSchema,
  RouteSchema,
  TargetRefSchema,
  type GatewayConfigFile,
  type RouteConfig,
  type TargetConfig,
} from './schema.js';
import { ConfigError, type ConfigIssue, type GatewayConfig, type LogLevel } from './types.js';
import { DURATION_PATTERN, SIZE_PATTERN, parseDuration, parseSize } from './units.js';
import { keyProblem, patternProblem } from '../topic/rules.js';
import { authConfigIssues } from '../auth/config.js';

export interface LoadedConfig {
  config: GatewayConfig;
  warnings: ConfigIssue[];
}

/** Reads and loads a gateway.yaml; see loadConfigText. */
export async function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadedConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError([{ file, line: 0, column: 0, path: '', message: `cannot read the config file: ${osReason(err)}` }]);
  }
  return loadConfigText(text, file, env);
}

/**
 * Parses, substitutes `${VAR}`, validates and resolves one gateway.yaml. Throws ConfigError with
 * every problem found, each positioned in `file`; what is suspicious but workable comes back as
 * warnings. `file` also anchors relative paths ('' = the working directory).
 */
export function loadConfigText(text: string, file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, merge: true });
  const report = new Reporter(file || '<config>', doc, lineCounter);

  for (const warning of doc.warnings) report.atOffset(warning.pos[0], warning.message, true);
  for (const error of doc.errors.filter((e) => e.code === 'DUPLICATE_KEY')) {
    const name = pathAtOffset(doc, error.pos[0]).at(-1);
    report.atOffset(error.pos[0], typeof name === 'string' ? `duplicate key "${name}"` : 'duplicate key', false);
  }
  // A duplicate key leaves a usable document behind. After any other syntax error the parser
  // resynchronises badly and the errors after the first are mostly echoes of it.
  const syntaxError = doc.errors.find((e) => e.code !== 'DUPLICATE_KEY');
  if (syntaxError) {
    const message = syntaxError.code === 'MULTIPLE_DOCS'
      ? 'the file holds more than one YAML document (a --- separator); keep the whole config in one'
      : syntaxError.message + flowHint(text, syntaxError.pos[0]);
    report.atOffset(syntaxError.pos[0], message, false, false);
    throw new ConfigError(report.sortedErrors());
  }

  const unresolved = substituteEnv(doc, env, report);
  const data: unknown = doc.contents === null ? {} : doc.toJS();
  const valid = validateSchema(data);
  if (!valid) reportSchemaErrors(validateSchema.errors ?? [], data, report, unresolved);
  checkSemantics(data, report, baseDirOf(file));
  if (report.errors.length > 0) throw new ConfigError(report.sortedErrors());

  return { config: deepFreeze(build(Value.Decode(GatewayConfigSchema, data), file)), warnings: report.sortedWarnings() };
}

// ---------------------------------------------------------------------------------------------
// Positions

type Segment = string | number;

class Reporter {
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

  /** `withPath: false` when the document around the offset cannot be trusted to name it. */
  atOffset(offset: number, message: string, warning: boolean, withPath = true): void {
    this.push(offset, withPath ? formatPath(pathAtOffset(this.doc, offset)) : '', message, warning);
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

/** `{ port: ${PORT} }` is a YAML syntax error: braces end the flow mapping, so say so. */
function flowHint(text: string, offset: number): string {
  const lineStart = text.lastIndexOf('\n', offset - 1) + 1;
  const lineEnd = text.indexOf('\n', offset);
  const line = text.slice(lineStart, lineEnd < 0 ? undefined : lineEnd);
  return /[{[].*\$\{/.test(line) ? ' (inside { } or [ ], quote values that use ${…})' : '';
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

function locate(doc: Document.Parsed, segments: readonly Segment[]): Place {
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

// ---------------------------------------------------------------------------------------------
// Environment substitution

const REFERENCE = /\$\$\{|\$\{([^}]*)\}|\$\{/g;
const VARIABLE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s;

/**
 * Expands `${VAR}` and `${VAR:-default}` in string values (not keys: they are names the schema
 * fixes). Returns the scalars that could not be expanded, so that schema errors about their
 * leftover `${…}` text do not bury the real cause.
 */
function substituteEnv(doc: Document.Parsed, env: NodeJS.ProcessEnv, report: Reporter): Set<YamlNode> {
  const unresolved = new Set<YamlNode>();
  const visit = (node: unknown, segments: Segment[]): void => {
    if (isMap(node)) {
      for (const pair of node.items) {
        if (isScalar(pair.key)) visit(pair.value, [...segments, String(pair.key.value)]);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => visit(item, [...segments, i]));
    } else if (isScalar(node) && typeof node.value === 'string' && node.value.includes('${')) {
      const problems: string[] = [];
      const expanded = expand(node.value, env, problems);
      if (problems.length > 0) {
        unresolved.add(node);
        for (const problem of problems) report.at(segments, problem);
        return;
      }
      // Unquoted text is typed like YAML would type it, so `port: ${PORT:-8080}` is a number.
      node.value = node.type === 'PLAIN' && !node.tag ? resolvePlain(expanded, doc) : expanded;
    }
  };
  visit(doc.contents, []);
  return unresolved;
}

function expand(text: string, env: NodeJS.ProcessEnv, problems: string[]): string {
  return text.replace(REFERENCE, (whole: string, body: string | undefined) => {
    if (whole === '$${') return '${';
    if (body === undefined) {
      problems.push('unterminated ${; write $${ for a literal ${');
      return whole;
    }
    const m = VARIABLE.exec(body);
    if (!m) {
      problems.push(`invalid reference ${whole}; expected \${NAME} or \${NAME:-default}`);
      return whole;
    }
    const name = m[1]!;
    const fallback = m[2];
    const value = env[name];
    // shell semantics: `:-` also replaces an empty value
    if (fallback !== undefined && (value === undefined || value === '')) return fallback;
    if (value !== undefined) return value;
    problems.push(`environment variable ${name} is not set (write \${${name}:-default} to give a default)`);
    return whole;
  });
}

function resolvePlain(text: string, doc: Document.Parsed): unknown {
  for (const tag of doc.schema.tags) {
    if (tag.collection === undefined && tag.default === true && tag.test?.test(text)) {
      return tag.resolve(text, () => undefined, doc.options);
    }
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// Schema validation

/** The JSON Schema keywords the messages below read, as Ajv hands schemas back. */
interface JsonSchema {
  type?: string;
  const?: unknown;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  anyOf?: JsonSchema[];
  properties?: Record<string, JsonSchema>;
  patternProperties?: Record<string, JsonSchema>;
  required?: string[];
}

const validateSchema = new Ajv({ allErrors: true, verbose: true, strict: false }).compile(GatewayConfigSchema);

const PATTERN_TEXT = new Map<string | undefined, string>([
  [DURATION_PATTERN, 'a duration such as 250ms, 2s, 1m'],
  [SIZE_PATTERN, 'a size such as 256kb, 1mb'],
  [HttpTargetSchema.properties.url.pattern, 'an http:// or https:// URL'],
  [GrpcTargetSchema.properties.method.pattern, 'a method such as package.Service/Method'],
  [RouteSchema.properties.name.pattern, 'a name made of letters, digits, _ . and -'],
]);

/** Unions whose generic wording ("a non-empty string, or …") would not tell an operator much. */
const UNION_TEXT = new Map<unknown, string>([
  [TargetRefSchema, 'a target name (an entry under targets, publish or deadletter) or { publish: KEY }'],
]);

const VALUE_KEYWORDS = new Set(['type', 'const', 'enum', 'pattern', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'minLength', 'maxLength', 'multipleOf']);

/**
 * Ajv reports a failed anyOf as the errors of every branch plus the anyOf itself. An operator
 * needs the errors of the branch they meant, so unions are settled outermost first: a branch is
 * picked by the `type:` discriminator or by the JSON type of the value, its errors are kept and
 * the others dropped; when no branch fits, one message says what would.
 */
function reportSchemaErrors(errors: ErrorObject[], data: unknown, report: Reporter, unresolved: Set<YamlNode>): void {
  const dropped = new Set<ErrorObject>();
  const unionOf = new Map<ErrorObject, JsonSchema>();
  const unions = errors
    .filter((e) => e.keyword === 'anyOf')
    .sort((a, b) => a.schemaPath.length - b.schemaPath.length || a.instancePath.length - b.instancePath.length);
  const unionIssues: ErrorObject[] = [];
  for (const union of unions) {
    if (dropped.has(union)) continue;
    dropped.add(union);
    const inner = errors.filter((e) => e !== union && isWithin(e, union));
    const branch = chooseBranch(union.schema as JsonSchema[], union.data);
    if (branch === undefined) {
      for (const e of inner) dropped.add(e);
      unionIssues.push(union);
      continue;
    }
    for (const e of inner) {
      if (!e.schemaPath.startsWith(`${union.schemaPath}/${branch}/`)) dropped.add(e);
      else if (e.instancePath === union.instancePath) unionOf.set(e, union.parentSchema as JsonSchema);
    }
  }

  const emit = (pointer: string, extra: Segment[], message: string, onKey = false): void => {
    const segments = [...pointerSegments(pointer, data), ...extra];
    const place = locate(report.doc, segments);
    if (place.complete && place.value !== undefined && unresolved.has(place.value)) return;
    report.at(segments, message, { onKey });
  };

  for (const union of unionIssues) {
    const message = unionMessage(union);
    emit(union.instancePath, message.segments, message.text);
  }
  for (const e of errors) {
    if (dropped.has(e)) continue;
    const parent = e.parentSchema as JsonSchema;
    if (e.keyword === 'required') {
      const missing = errors.filter((o) => o.keyword === 'required' && o.instancePath === e.instancePath && !dropped.has(o));
      if (missing[0] !== e) continue;
      const names = missing.map((o) => `"${String(o.params.missingProperty)}"`);
      emit(e.instancePath, [], `missing required key${names.length > 1 ? 's' : ''} ${names.join(', ')}`);
    } else if (e.keyword === 'additionalProperties') {
      const name = String(e.params.additionalProperty);
      const message = parent.properties
        ? `unknown key "${name}"; expected one of: ${Object.keys(parent.properties).join(', ')}`
        : `invalid name "${name}"; expected ${describePattern(Object.keys(parent.patternProperties ?? {})[0])}`;
      emit(e.instancePath, [name], message, true);
    } else if (e.keyword === 'minItems') {
      const limit = Number(e.params.limit);
      emit(e.instancePath, [], limit === 1 ? 'expected a non-empty list' : `expected at least ${limit} items`);
    } else if (e.keyword === 'uniqueItems') {
      const index = Math.max(Number(e.params.i), Number(e.params.j));
      const items = e.data as unknown[];
      emit(e.instancePath, [index], `duplicate entry ${shown(items[index])}`);
    } else if (VALUE_KEYWORDS.has(e.keyword)) {
      emit(e.instancePath, [], `expected ${describe(unionOf.get(e) ?? parent)}, got ${shown(e.data)}`);
    } else {
      emit(e.instancePath, [], e.message ?? `fails the ${e.keyword} rule`);
    }
  }
}

function isWithin(e: ErrorObject, union: ErrorObject): boolean {
  return e.schemaPath.startsWith(`${union.schemaPath}/`)
    && (e.instancePath === union.instancePath || e.instancePath.startsWith(`${union.instancePath}/`));
}

/** Branch values of `type:` when every branch is an object told apart by it, as targets are. */
function discriminators(branches: JsonSchema[]): string[] | undefined {
  const tags = branches.map((b) => b.properties?.type?.const);
  return tags.every((t): t is string => typeof t === 'string') ? tags : undefined;
}

function chooseBranch(branches: JsonSchema[], data: unknown): number | undefined {
  if (branches.every((b) => b.const !== undefined)) return undefined;
  const tags = discriminators(branches);
  if (tags) {
    const index = isRecord(data) ? tags.indexOf(data.type as string) : -1;
    return index >= 0 ? index : undefined;
  }
  const fitting = branches.flatMap((b, i) => (b.type === undefined || b.type === jsonType(data) || (b.type === 'number' && jsonType(data) === 'integer') ? [i] : []));
  return fitting.length === 1 ? fitting[0] : undefined;
}

function unionMessage(union: ErrorObject): { segments: Segment[]; text: string } {
  const branches = union.schema as JsonSchema[];
  const tags = discriminators(branches);
  if (tags) {
    const options = tags.join(', ');
    if (!isRecord(union.data)) return { segments: [], text: `expected a mapping whose type is one of: ${options}, got ${shown(union.data)}` };
    if (union.data.type === undefined) return { segments: [], text: `missing required key "type"; expected one of: ${options}` };
    return { segments: ['type'], text: `expected one of: ${options}, got ${shown(union.data.type)}` };
  }
  return { segments: [], text: `expected ${describe(union.parentSchema as JsonSchema)}, got ${shown(union.data)}` };
}

/** What a value of this schema looks like, worded to follow "expected". */
function describe(schema: JsonSchema): string {
  const known = UNION_TEXT.get(schema);
  if (known) return known;
  if (schema.anyOf) {
    if (schema.anyOf.every((b) => b.const !== undefined)) return `one of: ${schema.anyOf.map((b) => String(b.const)).join(', ')}`;
    if (schema.anyOf.some((b) => b.pattern === SIZE_PATTERN)) return 'a size such as 256kb, 1mb, or a number of bytes';
    return schema.anyOf.map(describe).join(', or ');
  }
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.pattern !== undefined) return describePattern(schema.pattern);
  switch (schema.type) {
    case 'integer': return describeRange('an integer', schema);
    case 'number': return describeRange('a number', schema);
    case 'string': return schema.minLength ? 'a non-empty string' : 'a string';
    case 'boolean': return 'true or false';
    case 'array': return 'a list';
    case 'object': return schema.required?.length ? `a mapping { ${schema.required.map((k) => `${k}: …`).join(', ')} }` : 'a mapping';
    default: return 'a valid value';
  }
}

function describePattern(pattern: string | undefined): string {
  return PATTERN_TEXT.get(pattern) ?? `a string matching ${pattern}`;
}

function describeRange(noun: string, { minimum, maximum }: JsonSchema): string {
  if (minimum !== undefined && maximum !== undefined) return `${noun} from ${minimum} to ${maximum}`;
  if (minimum !== undefined) return `${noun} of at least ${minimum}`;
  if (maximum !== undefined) return `${noun} of at most ${maximum}`;
  return noun;
}

function jsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

/** The offending value, short enough for one line. */
function shown(value: unknown): string {
  if (value === null || value === undefined) return 'an empty value';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  return String(value);
}

/** Ajv's instancePath as segments, with array indices as numbers (for `[1]` in paths). */
function pointerSegments(pointer: string, data: unknown): Segment[] {
  if (pointer === '') return [];
  let current = data;
  return pointer.slice(1).split('/').map((raw) => {
    const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    const index = Array.isArray(current) ? Number(segment) : undefined;
    current = index === undefined ? (isRecord(current) ? current[segment] : undefined) : (current as unknown[])[index];
    return index ?? segment;
  });
}

// ---------------------------------------------------------------------------------------------
// Cross-references and rule sanity. Run on the raw data even when the schema failed, so one run
// reports everything; every access is guarded for that reason.

function checkSemantics(data: unknown, report: Reporter, baseDir: string): void {
  if (!isRecord(data)) return;
  const targets = isRecord(data.targets) ? data.targets : {};
  const breakers = isRecord(data.breakers) ? data.breakers : {};
  const builtins: readonly string[] = BUILTIN_TARGETS;

  for (const [name, target] of Object.entries(targets)) {
    if (builtins.includes(name)) {
      report.at(['targets', name], `"${name}" is a built-in target and cannot be redefined; choose another name`, { onKey: true });
    }
    if (!isRecord(target)) continue;
    if (typeof target.breaker === 'string' && !Object.hasOwn(breakers, target.breaker)) {
      const names = Object.keys(breakers);
      report.at(['targets', name, 'breaker'], names.length > 0
        ? `unknown breaker "${target.breaker}"; expected one of: ${names.join(', ')}`
        : `unknown breaker "${target.breaker}"; no breakers are defined under breakers`);
    }
    if (target.type === 'grpc' && typeof target.proto === 'string' && target.proto !== '' && !existsSync(path.resolve(baseDir, target.proto))) {
      report.at(['targets', name, 'proto'], `file not found: ${path.resolve(baseDir, target.proto)}`, { warning: true });
    }
  }

  const targetNames = [...Object.keys(targets).filter((n) => !builtins.includes(n)), ...builtins];
  const routes = Array.isArray(data.routes) ? data.routes : [];
  const firstByName = new Map<string, number>();
  const rules: Rule[] = [];
  routes.forEach((route: unknown, i) => {
    if (!isRecord(route)) return;
    if (typeof route.name === 'string') {
      const first = firstByName.get(route.name);
      if (first === undefined) firstByName.set(route.name, i);
      else report.at(['routes', i, 'name'], `duplicate route name "${route.name}"; routes[${first}] already uses it`);
    }
    const match = isRecord(route.match) ? route.match : undefined;
    const key = typeof match?.key === 'string' && match.key !== '' ? match.key : undefined;
    const keyIsValid = key !== undefined && patternProblem(key) === undefined;
    if (key !== undefined && !keyIsValid) report.at(['routes', i, 'match', 'key'], patternProblem(key)!);
    const headers = checkHeaders(match?.headers, ['routes', i, 'match', 'headers'], report);

    for (const list of ['to', 'fallback'] as const) {
      const refs: unknown = route[list];
      if (!Array.isArray(refs)) continue;
      refs.forEach((ref: unknown, j) => checkTargetRef(ref, ['routes', i, list, j], targetNames, keyIsValid ? key : undefined, report));
    }
    const to: unknown = route.to;
    if (route.mode === 'request' && Array.isArray(to) && to[0] === 'deadletter') {
      report.at(['routes', i, 'to', 0], 'mode: request answers with the first target\'s reply, but deadletter never replies: every request will time out', { warning: true });
    }
    if (route.timeout !== undefined && route.mode !== 'request') {
      report.at(['routes', i, 'timeout'], 'timeout only applies with mode: request; it is ignored here', { warning: true });
    }
    if (key !== undefined && headers !== undefined) {
      rules.push({
        index: i,
        name: typeof route.name === 'string' ? route.name : `#${i}`,
        precedence: typeof route.priority === 'number' ? route.priority : 0,
        continues: route.continue === true,
        match: matchSignature(key, match?.protocols, headers),
      });
    }
  });
  warnShadowed(rules, report);
  for (const issue of authConfigIssues(data.auth)) report.at(issue.path, issue.message, { warning: issue.warning ?? false });
}

/** Lower-cased header names, reporting names that only differ by case; undefined if unusable. */
function checkHeaders(headers: unknown, at: Segment[], report: Reporter): Record<string, unknown> | undefined {
  if (headers === undefined) return {};
  if (!isRecord(headers)) return undefined;
  const lower: Record<string, unknown> = {};
  const original = new Map<string, string>();
  for (const [name, value] of Object.entries(headers)) {
    const folded = name.toLowerCase();
    const earlier = original.get(folded);
    if (earlier !== undefined) {
      report.at([...at, name], `header "${name}" repeats "${earlier}" (header names are case-insensitive)`, { onKey: true });
      continue;
    }
    original.set(folded, name);
    lower[folded] = value;
  }
  return lower;
}

const PLACEHOLDER = /\{(\d+)\}/g;

function checkTargetRef(ref: unknown, at: Segment[], targetNames: readonly string[], key: string | undefined, report: Reporter): void {
  if (typeof ref === 'string') {
    if (ref !== '' && !targetNames.includes(ref)) report.at(at, `unknown target "${ref}"; expected one of: ${targetNames.join(', ')}`);
    return;
  }
  if (!isRecord(ref) || typeof ref.publish !== 'string' || ref.publish === '') return;
  const template = ref.publish;
  if (key !== undefined) {
    const wildcards = key.split('/').filter((level) => level === '+' || level === '#').length;
    for (const m of template.matchAll(PLACEHOLDER)) {
      const n = Number(m[1]);
      if (n >= 1 && n <= wildcards) continue;
      report.at([...at, 'publish'], wildcards === 0
        ? `${m[0]} has nothing to refer to: match.key "${key}" has no wildcards`
        : `${m[0]} is out of range: match.key "${key}" has ${wildcards} wildcard${wildcards > 1 ? 's' : ''}, so use {1}${wildcards > 1 ? ` to {${wildcards}}` : ''}`);
    }
  }
  const literal = template.replace(PLACEHOLDER, 'x');
  if (/[+#]/.test(literal)) {
    report.at([...at, 'publish'], 'a publish key must not contain the wildcards + or #; use {1}, {2}… to insert the levels the match captured');
  } else {
    const problem = keyProblem(literal);
    if (problem) report.at([...at, 'publish'], problem);
  }
}

interface Rule {
  index: number;
  name: string;
  precedence: number;
  continues: boolean;
  match: string;
}

function matchSignature(key: string, protocols: unknown, headers: Record<string, unknown>): string {
  const protocolList = Array.isArray(protocols) ? [...protocols].map(String).sort() : ['*'];
  const headerList = Object.entries(headers).map(([name, value]) => [name, String(value)]).sort();
  return JSON.stringify([key, protocolList, headerList]);
}

/** A rule whose exact match is taken first by a rule that stops matching can never run. */
function warnShadowed(rules: Rule[], report: Reporter): void {
  const order = [...rules].sort((a, b) => b.precedence - a.precedence || a.index - b.index);
  order.forEach((rule, position) => {
    const winner = order.slice(0, position).find((earlier) => !earlier.continues && earlier.match === rule.match);
    if (!winner) return;
    report.at(['routes', rule.index, 'match'],
      `rule "${rule.name}" is shadowed by rule "${winner.name}" (routes[${winner.index}]): same match, higher or equal precedence, and no continue: true`,
      { warning: true });
  });
}

// ---------------------------------------------------------------------------------------------
// The resolved config

const DEFAULTS = {
  logLevel: 'info',
  maxPayloadSize: parseSize('1mb'),
  requestTimeout: parseDuration('5s'),
  drainTimeout: parseDuration('10s'),
  deadletterPath: 'data/deadletter.jsonl',
  deadletterMaxFileSize: parseSize('64mb'),
  defaultRoute: 'publish',
  /** room for the key, headers and protobuf framing around a payload of the largest size */
  grpcMessageOverhead: parseSize('64kb'),
  grpcKeepaliveTime: parseDuration('60s'),
  grpcKeepaliveTimeout: parseDuration('20s'),
  grpcMaxConcurrentStreams: 1000,
  grpcWindowMessages: 1024,
  grpcWindowBytes: parseSize('4mb'),
  /** room for the fixed header, topic (up to 64 KiB) and packet id around a payload of the largest size */
  mqttPacketOverhead: parseSize('64kb'),
  mqttMaxConnections: 10_000,
  mqttConnectTimeout: parseDuration('10s'),
  mqttMaxSubscriptions: 1000,
  mqttMaxInflightInbound: 1000,
  mqttMaxOutboundBuffer: parseSize('1mb'),
  mqttDrainTimeout: parseDuration('30s'),
  mqttMaxHold: parseDuration('10s'),
  wsMaxConnections: 10_000,
  wsMaxConnectionsPerIp: 1000,
  wsMaxSubscriptions: 1000,
  wsMaxInflight: 64,
  /** room for the op, key, headers and JSON escaping around a payload of the largest size */
  wsFrameOverhead: parseSize('64kb'),
  wsMaxOutboundBuffer: parseSize('1mb'),
  wsDrainTimeout: parseDuration('30s'),
  wsPingInterval: parseDuration('30s'),
  wsIdleTimeout: parseDuration('5m'),
  wsHandshakeTimeout: parseDuration('10s'),
} as const;

function build(file: GatewayConfigFile, source: string): GatewayConfig {
  const baseDir = baseDirOf(source);
  const listeners: GatewayConfig['listeners'] = {};
  for (const [name, listener] of Object.entries(file.listeners ?? {})) {
    if (listener) listeners[name as keyof GatewayConfig['listeners']] = listener;
  }
  const maxPayloadSize = file.limits?.maxPayloadSize ?? DEFAULTS.maxPayloadSize;
  return {
    file: source === '' ? '' : path.resolve(source),
    listeners,
    // the schema only admits the LogLevel names; TypeBox types a mapped union as plain string
    log: { level: (file.log?.level ?? DEFAULTS.logLevel) as LogLevel },
    limits: { maxPayloadSize },
    requests: { timeout: file.requests?.timeout ?? DEFAULTS.requestTimeout },
    shutdown: { drainTimeout: file.shutdown?.drainTimeout ?? DEFAULTS.drainTimeout },
    admin: file.admin?.token !== undefined ? { token: file.admin.token } : {},
    deadletter: {
      path: path.resolve(baseDir, file.deadletter?.path ?? DEFAULTS.deadletterPath),
      maxFileSize: file.deadletter?.maxFileSize ?? DEFAULTS.deadletterMaxFileSize,
    },
    grpc: {
      maxReceiveMessageSize: file.grpc?.maxReceiveMessageSize ?? maxPayloadSize + DEFAULTS.grpcMessageOverhead,
      keepalive: {
        time: file.grpc?.keepalive?.time ?? DEFAULTS.grpcKeepaliveTime,
        timeout: file.grpc?.keepalive?.timeout ?? DEFAULTS.grpcKeepaliveTimeout,
      },
      maxConcurrentStreams: file.grpc?.maxConcurrentStreams ?? DEFAULTS.grpcMaxConcurrentStreams,
      publishWindow: {
        messages: file.grpc?.publishWindow?.messages ?? DEFAULTS.grpcWindowMessages,
        bytes: file.grpc?.publishWindow?.bytes ?? DEFAULTS.grpcWindowBytes,
      },
      subscriberBuffer: {
        messages: file.grpc?.subscriberBuffer?.messages ?? DEFAULTS.grpcWindowMessages,
        bytes: file.grpc?.subscriberBuffer?.bytes ?? DEFAULTS.grpcWindowBytes,
      },
    },
    mqtt: {
      websocket: file.mqtt?.websocket ?? true,
      maxConnections: file.mqtt?.maxConnections ?? DEFAULTS.mqttMaxConnections,
      maxPacketSize: file.mqtt?.maxPacketSize ?? maxPayloadSize + DEFAULTS.mqttPacketOverhead,
      connectTimeout: file.mqtt?.connectTimeout ?? DEFAULTS.mqttConnectTimeout,
      keepaliveLimit: file.mqtt?.keepaliveLimit ?? 0,
      maxSubscriptions: file.mqtt?.maxSubscriptions ?? DEFAULTS.mqttMaxSubscriptions,
      maxInflightInbound: file.mqtt?.maxInflightInbound ?? DEFAULTS.mqttMaxInflightInbound,
      maxOutboundBuffer: file.mqtt?.maxOutboundBuffer ?? DEFAULTS.mqttMaxOutboundBuffer,
      drainTimeout: file.mqtt?.drainTimeout ?? DEFAULTS.mqttDrainTimeout,
      maxHold: file.mqtt?.maxHold ?? DEFAULTS.mqttMaxHold,
    },
    websocket: {
      enabled: file.websocket?.enabled ?? true,
      maxConnections: file.websocket?.maxConnections ?? DEFAULTS.wsMaxConnections,
      maxConnectionsPerIp: file.websocket?.maxConnectionsPerIp ?? DEFAULTS.wsMaxConnectionsPerIp,
      maxSubscriptions: file.websocket?.maxSubscriptions ?? DEFAULTS.wsMaxSubscriptions,
      maxInflight: file.websocket?.maxInflight ?? DEFAULTS.wsMaxInflight,
      // A binary payload travels as base64, 4/3 of its size: the largest accepted payload must fit.
      maxFrameSize: file.websocket?.maxFrameSize ?? Math.ceil(maxPayloadSize / 3) * 4 + DEFAULTS.wsFrameOverhead,
      maxOutboundBuffer: file.websocket?.maxOutboundBuffer ?? DEFAULTS.wsMaxOutboundBuffer,
      drainTimeout: file.websocket?.drainTimeout ?? DEFAULTS.wsDrainTimeout,
      pingInterval: file.websocket?.pingInterval ?? DEFAULTS.wsPingInterval,
      idleTimeout: file.websocket?.idleTimeout ?? DEFAULTS.wsIdleTimeout,
      handshakeTimeout: file.websocket?.handshakeTimeout ?? DEFAULTS.wsHandshakeTimeout,
      perMessageDeflate: file.websocket?.perMessageDeflate ?? false,
    },
    auth: {
      // Nothing is open by default (DESIGN "Security"): config/gateway.yaml turns this on for its local demo.
      anonymous: file.auth?.anonymous ?? false,
      users: file.auth?.users ?? [],
      ...(file.auth?.acl !== undefined ? { acl: file.auth.acl } : {}),
    },
    breakers: file.breakers ?? {},
    targets: Object.fromEntries(Object.entries(file.targets ?? {}).map(([name, target]): [string, TargetConfig] =>
      [name, target.type === 'grpc' ? { ...target, proto: path.resolve(baseDir, target.proto) } : target])),
    routes: (file.routes ?? []).map(lowerCaseHeaders),
    defaultRoute: file.defaultRoute ?? DEFAULTS.defaultRoute,
  };
}

function lowerCaseHeaders(route: RouteConfig): RouteConfig {
  const headers = route.match.headers;
  if (!headers) return route;
  return { ...route, match: { ...route.match, headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])) } };
}

function baseDirOf(file: string): string {
  return file === '' ? process.cwd() : path.dirname(path.resolve(file));
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** "no such file or directory (ENOENT)" from Node's "ENOENT: no such file or directory, open '…'". */
function osReason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as NodeJS.ErrnoException).code;
  const m = /^[A-Z]+: ([^,]+)/.exec(err.message);
  return m && code ? `${m[1]} (${code})` : err.message;
}

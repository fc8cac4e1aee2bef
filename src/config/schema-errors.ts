import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { Node as YamlNode } from 'yaml';
import type { Registry } from '../registry.js';
import { gatewayConfigSchema } from './schema.js';
import { isRecord, locate, type Reporter, type Segment } from './yaml-document.js';

/** The JSON Schema keywords the messages below read, as Ajv hands schemas back. */
interface JsonSchema {
  type?: string;
  const?: unknown;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  anyOf?: JsonSchema[];
  /** what a valid value looks like, in words (src/config/schema.ts) */
  expected?: string;
  /** what a valid name of a map's entries looks like */
  expectedKey?: string;
  /** where the values this key refuses belong instead */
  elsewhere?: string;
  /** keys this object no longer has, each with where its setting went (src/config/schema.ts) */
  retired?: Record<string, string>;
  properties?: Record<string, JsonSchema>;
  patternProperties?: Record<string, JsonSchema>;
  required?: string[];
}

// strict: false lets the schema carry its wording keywords (`expected`, `elsewhere`, `retired`).
// No code optimization: with it, compiling the config schema's validator (objects keyed by
// generated variable names, each a new shape from `{}`'s) left Node's process.nextTick on V8's slow
// path for the life of the process: its tick object literal's feedback went megamorphic, 1.1 µs
// more per HTTP request. (V8 stops linking new shapes to one parent past 1,536.) Validation runs
// at start and reload only; the unoptimized validator costs nothing per message.
const ajv = new Ajv({ allErrors: true, verbose: true, strict: false, code: { optimize: false } });
const validators = new WeakMap<Registry, ValidateFunction>();

function validatorOf(registry: Registry): ValidateFunction {
  let validate = validators.get(registry);
  if (!validate) {
    validate = ajv.compile(gatewayConfigSchema(registry));
    validators.set(registry, validate);
  }
  return validate;
}

/**
 * Checks `data` against the schema and reports what fails, worded for operators. Values left
 * `unresolved` by ${VAR} substitution were already reported and get no schema error on top.
 */
export function checkSchema(data: unknown, report: Reporter, unresolved: Set<YamlNode>, registry: Registry): void {
  const validate = validatorOf(registry);
  if (!validate(data)) reportSchemaErrors(validate.errors ?? [], data, report, unresolved);
}

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
      const retired = parent.retired?.[name];
      const message = retired !== undefined
        ? `"${name}" is no longer a key here: ${retired}`
        : parent.properties
        ? `unknown key "${name}"; expected one of: ${Object.keys(parent.properties).join(', ')}`
        : `invalid name "${name}"; expected ${parent.expectedKey ?? `a name matching ${Object.keys(parent.patternProperties ?? {})[0]}`}`;
      emit(e.instancePath, [name], message, true);
    } else if (e.keyword === 'minItems') {
      const limit = Number(e.params.limit);
      emit(e.instancePath, [], limit === 1 ? 'expected a non-empty list' : `expected at least ${limit} items`);
    } else if (e.keyword === 'uniqueItems') {
      const index = Math.max(Number(e.params.i), Number(e.params.j));
      const items = e.data as unknown[];
      emit(e.instancePath, [index], `duplicate entry ${shown(items[index])}`);
    } else if (VALUE_KEYWORDS.has(e.keyword)) {
      emit(e.instancePath, [], expected(unionOf.get(e) ?? parent, e.data));
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
  return { segments: [], text: expected(union.parentSchema as JsonSchema, union.data) };
}

function expected(schema: JsonSchema, data: unknown): string {
  return `expected ${describe(schema)}, got ${shown(data)}${schema.elsewhere ? `; ${schema.elsewhere}` : ''}`;
}

/** What a value of this schema looks like, worded to follow "expected". */
function describe(schema: JsonSchema): string {
  if (schema.expected !== undefined) return schema.expected;
  if (schema.anyOf) {
    if (schema.anyOf.every((b) => b.const !== undefined)) return `one of: ${schema.anyOf.map((b) => String(b.const)).join(', ')}`;
    return schema.anyOf.map(describe).join(', or ');
  }
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.pattern !== undefined) return `a string matching ${schema.pattern}`;
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

import { GatewayError } from '../errors.js';

/** The parts of a protobuf FieldDescriptorProto (as proto-loader gives it) that JSON checks need. */
export interface FieldDescriptor {
  /** camelCase, as loaded with keepCase false */
  name: string;
  type: string;
  label: string;
}

const INT32 = new Set(['TYPE_INT32', 'TYPE_SINT32', 'TYPE_SFIXED32', 'TYPE_UINT32', 'TYPE_FIXED32']);
const INT64 = new Set(['TYPE_INT64', 'TYPE_SINT64', 'TYPE_SFIXED64', 'TYPE_UINT64', 'TYPE_FIXED64']);
const FLOAT = new Set(['TYPE_DOUBLE', 'TYPE_FLOAT']);
const UNSIGNED = new Set(['TYPE_UINT32', 'TYPE_FIXED32', 'TYPE_UINT64', 'TYPE_FIXED64']);
const INTEGER_TEXT = /^-?\d+$/;

/** proto3's JSON name of a field: `account_id` → `accountId` (protobufjs camelCases the same way). */
function camelCase(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function bad(message: string, field?: string): GatewayError {
  // The sender's payload is wrong: trying it again cannot help, and it says nothing of the target's health.
  return new GatewayError('bad_request', message, { retryable: false, ...(field !== undefined ? { field } : {}) });
}

/** Whether one JSON value fits a field's type, following the proto3 JSON mapping. */
function fits(field: FieldDescriptor, value: unknown): boolean {
  const { type } = field;
  if (type === 'TYPE_STRING' || type === 'TYPE_BYTES') return typeof value === 'string';
  if (type === 'TYPE_BOOL') return typeof value === 'boolean';
  if (type === 'TYPE_MESSAGE' || type === 'TYPE_GROUP') return typeof value === 'object' && value !== null && !Array.isArray(value);
  if (type === 'TYPE_ENUM') return typeof value === 'string' || Number.isInteger(value);
  if (FLOAT.has(type)) return typeof value === 'number' || (typeof value === 'string' && (value === 'NaN' || value === 'Infinity' || value === '-Infinity' || Number.isFinite(Number(value))));
  const n = typeof value === 'string' && INTEGER_TEXT.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || (UNSIGNED.has(type) && n < 0)) return false;
  if (INT32.has(type)) return UNSIGNED.has(type) ? n <= 0xffffffff : n >= -(2 ** 31) && n < 2 ** 31;
  // 64-bit integers beyond 2^53 must come as strings, or JSON has already rounded them.
  return INT64.has(type) && (typeof value === 'string' || Number.isSafeInteger(n));
}

/**
 * A JSON payload as the plain object proto-loader serializes into the request message. Field
 * names may be the proto's (`account_id`) or their JSON names (`accountId`); unknown fields and
 * values of the wrong JSON type are refused (`bad_request`, not retryable) instead of being
 * dropped or zeroed silently. Nested messages are checked by protobufjs' own conversion only.
 * An empty payload is the empty message.
 */
export function requestFromJson(payload: Buffer, fields: readonly FieldDescriptor[], messageName: string): Record<string, unknown> {
  if (payload.length === 0) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    throw bad(`the payload is not JSON, so it cannot become a ${messageName}: ${(err as Error).message}`, 'payload');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw bad(`the payload must be a JSON object to become a ${messageName}`, 'payload');
  }
  const byName = new Map(fields.map((f) => [f.name, f]));
  const request: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(parsed)) {
    const field = byName.get(key) ?? byName.get(camelCase(key));
    if (field === undefined) throw bad(`${messageName} has no field "${key}"`, key);
    // proto3 JSON: null is the field's default value.
    if (value === null) continue;
    const repeated = field.label === 'LABEL_REPEATED';
    // A map field is a repeated message of entries, written in JSON as an object.
    const isMap = repeated && field.type === 'TYPE_MESSAGE' && !Array.isArray(value);
    const ok = isMap
      ? typeof value === 'object'
      : repeated
        ? Array.isArray(value) && value.every((item) => fits(field, item))
        : fits(field, value);
    if (!ok) throw bad(`${messageName}.${field.name}: ${JSON.stringify(value).slice(0, 60)} is not a valid ${repeated && !isMap ? 'list of ' : ''}${field.type.slice(5).toLowerCase()}`, key);
    request[field.name] = value;
  }
  return request;
}

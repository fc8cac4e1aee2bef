import { describe, expect, it } from 'vitest';
import { requestFromJson, type FieldDescriptor } from '../../src/targets/grpc-json.js';
import { GatewayError } from '../../src/errors.js';

const FIELDS: FieldDescriptor[] = [
  { name: 'accountId', type: 'TYPE_STRING', label: 'LABEL_OPTIONAL' },
  { name: 'amountMinor', type: 'TYPE_INT64', label: 'LABEL_OPTIONAL' },
  { name: 'count', type: 'TYPE_UINT32', label: 'LABEL_OPTIONAL' },
  { name: 'ratio', type: 'TYPE_DOUBLE', label: 'LABEL_OPTIONAL' },
  { name: 'urgent', type: 'TYPE_BOOL', label: 'LABEL_OPTIONAL' },
  { name: 'status', type: 'TYPE_ENUM', label: 'LABEL_OPTIONAL' },
  { name: 'tags', type: 'TYPE_STRING', label: 'LABEL_REPEATED' },
  { name: 'labels', type: 'TYPE_MESSAGE', label: 'LABEL_REPEATED' },
  { name: 'address', type: 'TYPE_MESSAGE', label: 'LABEL_OPTIONAL' },
];

const json = (value: unknown) => Buffer.from(JSON.stringify(value));

function refusal(payload: Buffer): GatewayError {
  try {
    requestFromJson(payload, FIELDS, 'Charge');
  } catch (err) {
    return err as GatewayError;
  }
  throw new Error('accepted');
}

describe('requestFromJson', () => {
  it('accepts proto names and JSON names, 64-bit integers as strings, enums by name, maps as objects', () => {
    expect(requestFromJson(json({
      account_id: 'a', amountMinor: '9007199254740993', count: '7', ratio: 'NaN', urgent: true, status: 'STATUS_ACCEPTED',
      tags: ['x'], labels: { k: 'v' }, address: { city: 'Oslo' },
    }), FIELDS, 'Charge')).toEqual({
      accountId: 'a', amountMinor: '9007199254740993', count: '7', ratio: 'NaN', urgent: true, status: 'STATUS_ACCEPTED',
      tags: ['x'], labels: { k: 'v' }, address: { city: 'Oslo' },
    });
  });

  it('treats an empty payload as the empty message and null as the default', () => {
    expect(requestFromJson(Buffer.alloc(0), FIELDS, 'Charge')).toEqual({});
    expect(requestFromJson(json({ accountId: null }), FIELDS, 'Charge')).toEqual({});
  });

  it('refuses what would be dropped or zeroed silently, as a non-retryable bad_request', () => {
    for (const [payload, field] of [
      [Buffer.from('{oops'), 'payload'],
      [json([1, 2]), 'payload'],
      [json({ acount_id: 'typo' }), 'acount_id'],
      [json({ accountId: 7 }), 'accountId'],
      [json({ amountMinor: 12.5 }), 'amountMinor'],
      [json({ amountMinor: 2 ** 60 }), 'amountMinor'],
      [json({ count: -1 }), 'count'],
      [json({ urgent: 'yes' }), 'urgent'],
      [json({ tags: 'x' }), 'tags'],
      [json({ address: 'Oslo' }), 'address'],
    ] as const) {
      const err = refusal(payload);
      expect(err.code, payload.toString()).toBe('bad_request');
      expect(err.details).toMatchObject({ retryable: false, field });
    }
  });
});

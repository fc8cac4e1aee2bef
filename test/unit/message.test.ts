import { describe, expect, it } from 'vitest';
import { isValidTraceparent, newMessageId, newTraceparent } from '../../src/message.js';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('message ids', () => {
  it('are RFC 9562 UUIDv7s carrying the creation time in milliseconds', () => {
    const before = Date.now();
    const id = newMessageId();
    expect(id).toMatch(UUID_V7);
    const ms = parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(Date.now() + 1);
  });

  it('sort in creation order and never repeat, even many per millisecond', () => {
    const ids = Array.from({ length: 50_000 }, () => newMessageId());
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
    for (const id of ids.slice(0, 100)) expect(id).toMatch(UUID_V7);
  });
});

describe('trace context', () => {
  it('new traceparents are valid W3C ones with fresh ids each time', () => {
    const a = newTraceparent();
    const b = newTraceparent();
    expect(isValidTraceparent(a)).toBe(true);
    expect(a).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(a.slice(3, 35)).not.toBe(b.slice(3, 35));
  });
});

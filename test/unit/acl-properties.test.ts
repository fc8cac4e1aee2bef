/**
 * Properties of the key and pattern rules, the ACL's placeholder substitution and subscription
 * coverage, and JWT claim mapping, checked on generated inputs (fast-check). A failure prints
 * its seed and the smallest input it found.
 */
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { decide, substitute, type AclRuleConfig } from '../../src/auth/acl.js';
import { JwtVerifier } from '../../src/auth/jwt.js';
import { filterCovers, filterMatches, filtersIntersect, keyProblem, labelProblem, patternProblem } from '../../src/topic/rules.js';

/** Levels from a small alphabet, so generated filters and keys often meet. */
const level = fc.constantFrom('a', 'b', 'c', '', '$x');
const literalLevel = fc.constantFrom('a', 'b', 'c', '');
const key = fc.array(level, { minLength: 1, maxLength: 5 }).map((levels) => levels.join('/')).filter((k) => k !== '');
const filter = fc.tuple(
  fc.array(fc.oneof(level, fc.constant('+')), { minLength: 1, maxLength: 4 }),
  fc.boolean(),
).map(([levels, hash]) => (hash ? [...levels, '#'] : levels).join('/')).filter((f) => f !== '' && patternProblem(f) === undefined);

/** Every key of up to `extra` more levels that `f` matches, from the alphabet (a sample, complete for these small sizes). */
function keysOf(f: string): string[] {
  const out: string[] = [];
  const walk = (levels: string[], prefix: string[]) => {
    if (levels.length === 0) {
      if (prefix.length > 0) out.push(prefix.join('/'));
      return;
    }
    const [head, ...rest] = levels;
    if (head === '#') {
      out.push(prefix.join('/'));
      for (const a of ['a', '$x', '']) for (const b of [[], ['b'], ['b', 'c']]) out.push([...prefix, a, ...b].join('/'));
      return;
    }
    const choices = head === '+' ? ['a', 'b', 'c', '', '$x'] : [head!];
    for (const choice of choices) walk(rest, [...prefix, choice]);
  };
  walk(f.split('/'), []);
  return out.filter((k) => k !== '' && keyProblem(k) === undefined && filterMatches(f, k));
}

describe('key and pattern rules', () => {
  it('a key is valid exactly when it has no wildcard or NUL and is not empty; labels the same', () => {
    fc.assert(fc.property(fc.string({ unit: 'grapheme', maxLength: 30 }), (text) => {
      const invalid = text === '' || /[+#]/.test(text) || text.includes('\u0000');
      expect(keyProblem(text) === undefined).toBe(!invalid);
      expect(labelProblem(text) === undefined).toBe(!invalid && text.length <= 128);
    }));
  });

  it('every valid key is a valid pattern that matches itself only', () => {
    fc.assert(fc.property(key, key, (k, other) => {
      expect(patternProblem(k)).toBeUndefined();
      expect(filterMatches(k, k)).toBe(true);
      expect(filterMatches(k, other)).toBe(k === other);
    }));
  });

  it('a pattern covers a filter only if it matches every key the filter matches', () => {
    fc.assert(fc.property(filter, filter, (pattern, f) => {
      if (!filterCovers(pattern, f)) return;
      for (const k of keysOf(f)) expect(filterMatches(pattern, k), `${pattern} covers ${f} but not ${k}`).toBe(true);
    }), { numRuns: 500 });
  });

  it('two filters intersect exactly when some key matches both', () => {
    fc.assert(fc.property(filter, filter, (a, b) => {
      const shared = keysOf(b).some((k) => filterMatches(a, k)) || keysOf(a).some((k) => filterMatches(b, k));
      expect(filtersIntersect(a, b), `${a} ∩ ${b}`).toBe(shared);
      expect(filtersIntersect(b, a)).toBe(filtersIntersect(a, b));
    }), { numRuns: 500 });
  });
});

describe('ACL placeholders and decisions', () => {
  const value = fc.string({ maxLength: 8 });

  it('substitution fills each placeholder with one whole level, or leaves the pattern out', () => {
    fc.assert(fc.property(value, value, fc.array(literalLevel, { maxLength: 3 }), (principal, tenant, tail) => {
      const pattern = ['t', '{claim.tenant}', '{principal}', ...tail].join('/');
      const filled = substitute(pattern, { principal, roles: [], claims: { tenant } });
      const usable = (v: string) => v !== '' && !/[/+#]/.test(v) && !v.includes('\u0000');
      if (!usable(principal) || !usable(tenant)) {
        expect(filled).toBeUndefined();
        return;
      }
      expect(filled).toBe(['t', tenant, principal, ...tail].join('/'));
      expect(filled!.split('/')).toHaveLength(pattern.split('/').length);
      expect(patternProblem(filled!)).toBeUndefined();
    }));
  });

  it('an allow rule with {principal} never grants a key of another principal', () => {
    const rules: AclRuleConfig[] = [{ principal: '*', effect: 'allow', publish: ['devices/{principal}/#'], subscribe: ['devices/{principal}/#'] }];
    fc.assert(fc.property(value, value, fc.array(literalLevel, { maxLength: 3 }), (me, other, rest) => {
      const subject = { principal: me, roles: [], claims: {} };
      const target = ['devices', other, ...rest].join('/');
      if (keyProblem(target) !== undefined) return;
      const allowed = decide(rules, subject, 'publish', target).allowed;
      if (allowed) expect(other).toBe(me);
    }));
  });

  it('the first rule that concerns a request decides, and a deny before an allow always wins over what it names', () => {
    fc.assert(fc.property(filter, filter, filter, (denied, allowed, asked) => {
      const rules: AclRuleConfig[] = [
        { principal: '*', effect: 'deny', subscribe: [denied] },
        { principal: '*', effect: 'allow', subscribe: [allowed] },
      ];
      const decision = decide(rules, { principal: 'p', roles: [], claims: {} }, 'subscribe', asked);
      // A subscription that is let through never reaches a denied key, and lies inside the allowed pattern.
      if (decision.allowed) {
        for (const k of keysOf(asked)) {
          expect(filterMatches(denied, k)).toBe(false);
          expect(filterMatches(allowed, k)).toBe(true);
        }
      }
      expect(decision.allowed).toBe(!filtersIntersect(denied, asked) && filterCovers(allowed, asked));
    }), { numRuns: 500 });
  });
});

describe('JWT claim mapping', () => {
  const secret = 'a secret of at least thirty-two characters';
  const verifier = new JwtVerifier({ secret, clockTolerance: 0, jwksCacheMaxAge: 1, jwksCooldown: 1, principalClaim: 'sub', rolesClaim: 'roles' });
  const claimValue = fc.oneof(fc.string({ maxLength: 6 }), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.constant(null), fc.array(fc.string({ maxLength: 4 }), { maxLength: 3 }));

  it('keeps string and number claims as text for placeholders, and takes roles from an array or a space-separated string', async () => {
    await fc.assert(fc.asyncProperty(
      fc.dictionary(fc.constantFrom('tenant', 'site', 'n', 'flag', 'list'), claimValue),
      fc.oneof(fc.array(fc.oneof(fc.string({ maxLength: 5 }), fc.integer()), { maxLength: 4 }), fc.string({ maxLength: 12 })),
      fc.string({ minLength: 1, maxLength: 10 }),
      async (claims, roles, sub) => {
        const token = await new SignJWT({ ...claims, roles }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).sign(new TextEncoder().encode(secret));
        const mapped = await verifier.verify(token);
        expect(mapped.principal).toBe(sub);
        for (const [name, v] of Object.entries(claims)) {
          const expected = typeof v === 'string' ? (v === '' ? undefined : v) : typeof v === 'number' ? String(v) : undefined;
          expect(mapped.claims[name]).toBe(expected);
        }
        const expectedRoles = typeof roles === 'string' ? roles.split(' ').filter((r) => r !== '') : roles.filter((r): r is string => typeof r === 'string' && r !== '');
        expect(mapped.roles).toEqual(expectedRoles);
      },
    ), { numRuns: 60 });
  });
});

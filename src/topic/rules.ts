/**
 * MQTT's topic rules, the one place they are written down for every protocol: route keys are
 * topic names, subscription and rule patterns are topic filters (MQTT 3.1.1 §4.7). The router's
 * and the bus's trie (./trie.ts) walks the same rules in its own optimised form.
 */

/** MQTT topic names are length-prefixed with 16 bits [MQTT-1.5.3]. */
export const MAX_KEY_BYTES = 65535;

/** Requests handed to responders carry an inbox key under this prefix as `replyTo`. */
export const INBOX_PREFIX = '_inbox/';

/**
 * MQTT 3.1.1 has no reply address: a client sends a request by publishing to
 * `_request/<id>/<key>` and gets the answer on `_reply/<id>` (adapters/mqtt/request-reply.ts).
 */
export const REQUEST_PREFIX = '_request/';
export const REPLY_PREFIX = '_reply/';

/**
 * Keys that belong to the gateway, on every protocol alike: `$SYS` is the broker's
 * [MQTT-4.7.2-1], and an inbox is answered only by the responder a request was handed to
 * (src/delivery/inbox.ts). No ACL rule can grant a publish to them.
 */
const RESERVED_PREFIXES = ['$SYS/', INBOX_PREFIX, REQUEST_PREFIX, REPLY_PREFIX] as const;

/** Why no client may publish to `key` whatever the ACL says, or undefined when one may. */
export function reservedKeyProblem(key: string): string | undefined {
  if (key === '$SYS') return '$SYS is reserved for the broker';
  const prefix = RESERVED_PREFIXES.find((p) => key.startsWith(p));
  if (prefix === undefined) return undefined;
  if (prefix === INBOX_PREFIX) return `${INBOX_PREFIX} keys take only the answer to a request handed to this client`;
  if (prefix === REQUEST_PREFIX || prefix === REPLY_PREFIX) return `${prefix} keys carry MQTT 3.1.1 requests and their answers (docs/mqtt.md), never messages`;
  return `${prefix} keys are reserved for the broker`;
}

/**
 * Ids and correlation ids that clients give are labels, never parts of a key the gateway
 * builds; they follow the key rules all the same (no wildcards, no NUL, well-formed), so they
 * can be logged, stored and compared anywhere without surprises. Returns what is wrong.
 */
export function labelProblem(label: string, maxLength = 128): string | undefined {
  if (typeof label !== 'string' || label.length === 0 || label.length > maxLength) return `must be a non-empty string of at most ${maxLength} characters`;
  if (label.includes('+') || label.includes('#')) return 'must not contain + or #';
  if (label.includes('\u0000')) return 'must not contain NUL';
  if (!label.isWellFormed()) return 'must be well-formed UTF-8';
  return undefined;
}

/**
 * Checks a route key against the topic-name rules [MQTT-4.7.1-1], [MQTT-4.7.3-1..3]: at least
 * one character, no wildcards, no NUL, at most 65535 UTF-8 bytes. Returns what is wrong, or
 * undefined when the key is valid.
 */
export function keyProblem(key: string): string | undefined {
  if (typeof key !== 'string' || key.length === 0) return 'key must not be empty';
  if (key.includes('+') || key.includes('#')) return 'key must not contain the wildcards + or #';
  if (key.includes('\u0000')) return 'key must not contain NUL';
  if (key.length > MAX_KEY_BYTES / 3 && Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) {
    return `key must be at most ${MAX_KEY_BYTES} bytes of UTF-8`;
  }
  if (!key.isWellFormed()) return 'key must be well-formed UTF-8';
  return undefined;
}

/**
 * Checks a pattern against the topic-filter rules [MQTT-4.7.1-2], [MQTT-4.7.1-3]: `#` only as
 * the whole last level, `+` only as a whole level.
 */
export function patternProblem(pattern: string): string | undefined {
  if (typeof pattern !== 'string' || pattern.length === 0) return 'pattern must not be empty';
  if (pattern.includes('\u0000')) return 'pattern must not contain NUL';
  if (Buffer.byteLength(pattern, 'utf8') > MAX_KEY_BYTES) return `pattern must be at most ${MAX_KEY_BYTES} bytes of UTF-8`;
  const levels = pattern.split('/');
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) {
      return '# must be a whole level and the last one';
    }
    if (level.includes('+') && level !== '+') return '+ must be a whole level';
  }
  return undefined;
}

/** The most characters a group name may have. */
export const MAX_GROUP_NAME = 128;

/**
 * Checks a group name (MQTT 5 calls it the ShareName, [MQTT-4.8.2-2]): not empty, no `/`, `+`,
 * `#` or NUL, at most MAX_GROUP_NAME characters.
 */
export function groupProblem(name: string): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'group must not be empty';
  if (/[/+#]/.test(name) || name.includes('\u0000')) return 'group must not contain /, +, # or NUL';
  if (name.length > MAX_GROUP_NAME) return `group must be at most ${MAX_GROUP_NAME} characters`;
  return undefined;
}

/**
 * [MQTT-4.7.2-1]: a filter whose first level is a wildcard matches no key starting with `$`
 * (`#` does not match `$SYS/uptime`; `$SYS/#` does).
 */
export function startsWithWildcard(pattern: string): boolean {
  return pattern.startsWith('+') || pattern.startsWith('#');
}

/** Whether a valid pattern matches a key. */
export function filterMatches(pattern: string, key: string): boolean {
  if (key.startsWith('$') && startsWithWildcard(pattern)) return false;
  const filter = pattern.split('/');
  const levels = key.split('/');
  for (let i = 0; i < filter.length; i++) {
    const f = filter[i]!;
    if (f === '#') return true;
    if (i >= levels.length) return false;
    if (f !== '+' && f !== levels[i]) return false;
  }
  return filter.length === levels.length;
}

/**
 * Whether every key `filter` can match is also matched by `pattern`: a subscription to `filter`
 * can then only ever deliver keys `pattern` allows. `sensors/#` covers `sensors/+/temp` and
 * `sensors`; `sensors/+` does not cover `sensors/#`.
 */
export function filterCovers(pattern: string, filter: string): boolean {
  if (filter.startsWith('$') && startsWithWildcard(pattern)) return false;
  const p = pattern.split('/');
  const f = filter.split('/');
  for (let i = 0; ; i++) {
    const pl = p[i];
    const fl = f[i];
    if (pl === '#') return true;
    if (pl === undefined || fl === undefined) return pl === fl;
    if (fl === '#') return false;
    if (pl === '+') continue;
    if (fl === '+' || pl !== fl) return false;
  }
}

/**
 * Whether some key is matched by both filters: a subscription to `filter` could then deliver a
 * key `pattern` names. `a/#` and `+/b` intersect (on `a/b`); `a/+` and `a/b/c` do not.
 */
export function filtersIntersect(pattern: string, filter: string): boolean {
  // [MQTT-4.7.2-1]: a leading wildcard matches no `$` key, and a `$` first level matches only `$` keys.
  const dollar = (f: string) => f.startsWith('$');
  if ((dollar(pattern) && startsWithWildcard(filter)) || (dollar(filter) && startsWithWildcard(pattern))) return false;
  const p = pattern.split('/');
  const f = filter.split('/');
  for (let i = 0; ; i++) {
    const pl = p[i];
    const fl = f[i];
    if (pl === '#' || fl === '#') {
      // `#` also matches its parent level: when the other filter ends there with one level, the
      // shared key is that level alone, which must not be empty (an empty key is no key).
      const other = pl === '#' ? fl : pl;
      return !(other === undefined && i === 1 && (p[0] === '' || f[0] === ''));
    }
    if (pl === undefined || fl === undefined) return pl === fl;
    if (pl !== '+' && fl !== '+' && pl !== fl) return false;
  }
}

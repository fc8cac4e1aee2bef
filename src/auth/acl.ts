/** In an ACL pattern, replaced by the principal the rule is applied to. */
export const PRINCIPAL_PLACEHOLDER = '{principal}';

function startsWithWildcard(filter: string): boolean {
  return filter.startsWith('+') || filter.startsWith('#');
}

/**
 * Whether every key `filter` can match is also matched by `pattern`: a subscription to `filter`
 * can then only ever deliver keys the ACL allows. `sensors/#` covers `sensors/+/temp` and `sensors`;
 * `sensors/+` does not cover `sensors/#`. A pattern starting with a wildcard covers no `$` filter,
 * since it matches no `$` key [MQTT-4.7.2-1].
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

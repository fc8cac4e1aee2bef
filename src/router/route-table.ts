import type { DefaultRoute } from '../config/types.js';
import type { RouteConfig, TargetRefConfig } from '../config/schema.js';
import type { Protocol } from '../message.js';
import { TopicTrie } from '../topic/trie.js';
import type {
  CompiledRoute,
  LossReason,
  RoutableMessage,
  RouteDecision,
  RouteExplanation,
  RouteMatch,
  RouteTable,
  TargetBinding,
} from './types.js';

/** A `to`/`fallback` entry, prepared so that a match only fills in the key. */
type TargetTemplate =
  /** a named target or `deadletter`: the same binding for every message */
  | { kind: 'fixed'; binding: TargetBinding }
  /** `publish`: the message's own key */
  | { kind: 'key' }
  /** `{publish: "a/{1}/b"}`: literals[0] + captures[slots[0]] + literals[1] + … */
  | { kind: 'template'; literals: readonly string[]; slots: readonly number[] };

interface Rule {
  route: CompiledRoute;
  /** position in precedence order: lower wins */
  rank: number;
  /** a bit per allowed protocol (protocolBits) */
  protocolMask: number;
  /** lower-cased header names and the values they must have, as parallel arrays */
  headerCount: number;
  headerNames: readonly string[];
  headerValues: readonly string[];
  targets: readonly TargetTemplate[];
  fallback: readonly TargetTemplate[];
  /** the bindings themselves when no template depends on the message (named targets, deadletter): shared by every match */
  fixedTargets: readonly TargetBinding[] | undefined;
  fixedFallback: readonly TargetBinding[] | undefined;
  /**
   * The last key this rule matched, its match (captures and bindings), and the decision where the
   * rule won alone: devices repeat their keys, and the same key always makes the same match, so
   * one entry per rule spares the next message of that key new objects.
   */
  lastKey: string | undefined;
  lastMatch: RouteMatch | undefined;
  lastDecision: RouteDecision | undefined;
  continues: boolean;
}

/** The bit of every protocol no rule names; a rule without `protocols` admits it with all the others. */
const OTHER_PROTOCOL = 1 << 30;
const ANY_PROTOCOL = 0x7fffffff;

/** A bit for each protocol the rules name, so a rule's protocols are one mask to test. */
function protocolBits(routes: readonly RouteConfig[]): Map<Protocol, number> {
  const bits = new Map<Protocol, number>();
  for (const route of routes) {
    if (route.match.protocols === undefined) continue;
    for (const protocol of route.match.protocols) {
      if (bits.has(protocol)) continue;
      if (bits.size === 30) throw new Error('rules name more than 30 protocols');
      bits.set(protocol, 1 << bits.size);
    }
  }
  return bits;
}
const SLOT = /\{([0-9]+)\}/g;

/**
 * Compiles `routes:` into an immutable table. Rules that share a key pattern share one trie entry
 * holding them already sorted by precedence (priority descending, then file order), so matching a
 * key costs a walk over its levels plus a merge of the few small sorted lists it reaches.
 * `routes` of the table lists the compiled rules in precedence order, the order they are tried.
 * The routes come from loadConfigText, which has checked them (patterns, names, headers, `{N}`
 * ranges) and reported what is wrong with its position; nothing is checked again here.
 */
export function compileRouteTable(routes: readonly RouteConfig[], defaultRoute: DefaultRoute, version = 1): RouteTable {
  const bits = protocolBits(routes);
  const rules: Rule[] = routes.map((config, index) => compileRule(config, index, bits));

  rules.sort((a, b) => b.route.priority - a.route.priority || a.route.index - b.route.index);
  const byPattern = new Map<string, Rule[]>();
  for (let rank = 0; rank < rules.length; rank++) {
    const rule = rules[rank]!;
    rule.rank = rank;
    const list = byPattern.get(rule.route.pattern);
    if (list === undefined) byPattern.set(rule.route.pattern, [rule]);
    else list.push(rule);
  }
  const trie = new TopicTrie<readonly Rule[]>();
  for (const [pattern, list] of byPattern) trie.add(pattern, Object.freeze(list));

  // Scratch for one match: the sorted rule lists the key reached and their captures, packed in one
  // buffer. Reused across calls because match() runs to completion without calling out, so no two
  // matches on this table can interleave; nothing of it is visible outside.
  const reached: (readonly Rule[])[] = [];
  const capStart: number[] = [];
  const capEnd: number[] = [];
  const capBuf: string[] = [];
  const cursor: number[] = [];
  let reachedCount = 0;
  let capCount = 0;
  const collect = (list: readonly Rule[], captures: readonly string[]): void => {
    reached[reachedCount] = list;
    capStart[reachedCount] = capCount;
    for (let i = 0; i < captures.length; i++) capBuf[capCount++] = captures[i]!;
    capEnd[reachedCount] = capCount;
    reachedCount++;
  };

  const matchOf = (rule: Rule, list: number, key: string): RouteMatch => {
    if (rule.lastKey === key) return rule.lastMatch!;
    const captures = capBuf.slice(capStart[list]!, capEnd[list]!);
    const match: RouteMatch = Object.freeze({
      route: rule.route,
      captures: Object.freeze(captures),
      targets: rule.fixedTargets ?? Object.freeze(bind(rule.targets, captures, key)),
      fallback: rule.fixedFallback ?? Object.freeze(bind(rule.fallback, captures, key)),
    });
    rule.lastKey = key;
    rule.lastMatch = match;
    rule.lastDecision = undefined;
    return match;
  };

  /** The decision where `rule` alone wins for `key`. */
  const wonAlone = (rule: Rule, key: string): RouteDecision => {
    const match = matchOf(rule, 0, key);
    return rule.lastDecision ??= Object.freeze({ matches: Object.freeze([match]) });
  };

  const match = (message: RoutableMessage): RouteDecision => {
    reachedCount = 0;
    capCount = 0;
    trie.match(message.key, collect);
    const protocolBit = bits.get(message.protocol) ?? OTHER_PROTOCOL;
    let matches: RouteMatch[] | undefined;
    if (reachedCount === 1) {
      // The common case: one pattern matched, usually with one rule that wins at once, whose
      // match goes in an array of one rather than one grown by push (room for 16 allocated).
      const list = reached[0]!;
      for (let i = 0; i < list.length; i++) {
        const rule = list[i]!;
        if (!admits(rule, message, protocolBit)) continue;
        if (matches === undefined && !rule.continues) return wonAlone(rule, message.key);
        const found = matchOf(rule, 0, message.key);
        if (matches === undefined) matches = [found];
        else matches.push(found);
        if (!rule.continues) break;
      }
    } else if (reachedCount > 1) {
      matches = [];
      // Merge the reached lists by rank, taking the head with the lowest rank each time.
      for (let l = 0; l < reachedCount; l++) cursor[l] = 0;
      for (;;) {
        let best = -1;
        let bestRank = Number.POSITIVE_INFINITY;
        for (let l = 0; l < reachedCount; l++) {
          const list = reached[l]!;
          const at = cursor[l]!;
          if (at < list.length && list[at]!.rank < bestRank) {
            best = l;
            bestRank = list[at]!.rank;
          }
        }
        if (best < 0) break;
        const rule = reached[best]![cursor[best]!]!;
        cursor[best]!++;
        if (!admits(rule, message, protocolBit)) continue;
        matches.push(matchOf(rule, best, message.key));
        if (!rule.continues) break;
      }
    }
    return matches !== undefined && matches.length > 0 ? { matches } : { matches: [], default: defaultRoute };
  };

  const explain = (message: RoutableMessage): RouteExplanation => {
    const decision = match(message);
    const candidates: Rule[] = [];
    trie.match(message.key, (list) => {
      candidates.push(...list);
    });
    candidates.sort((a, b) => a.rank - b.rank);
    const won = new Set(decision.matches.map((m) => m.route));
    const last = decision.matches.at(-1);
    const losers: RouteExplanation['losers'] = [];
    for (const rule of candidates) {
      if (won.has(rule.route)) continue;
      // A rule that admits the message but did not win comes after the end of the winning chain,
      // so `last` is set here.
      const reason: LossReason = filterLoss(rule, message) ?? { kind: 'precedence', winner: last!.route.name };
      losers.push({ route: rule.route, reason });
    }
    return { decision, losers };
  };

  return Object.freeze({
    version,
    loadedAt: new Date(),
    routes: Object.freeze(rules.map((rule) => rule.route)),
    defaultRoute,
    match,
    explain,
  });
}

function compileRule(config: RouteConfig, index: number, bits: ReadonlyMap<Protocol, number>): Rule {
  const route: CompiledRoute = {
    name: config.name,
    index,
    pattern: config.match.key,
    priority: config.priority,
    mode: config.mode,
    timeout: config.timeout,
    continue: config.continue,
    expired: config.expired,
  };
  let protocolMask = ANY_PROTOCOL;
  if (config.match.protocols !== undefined) {
    route.protocols = Object.freeze([...config.match.protocols]);
    protocolMask = 0;
    for (const p of config.match.protocols) protocolMask |= bits.get(p)!;
  }
  const headerNames: string[] = [];
  const headerValues: string[] = [];
  if (config.match.headers !== undefined) {
    // Adapters lower-case header names, so rules compare in lower case too.
    for (const [name, value] of Object.entries(config.match.headers)) {
      headerNames.push(name.toLowerCase());
      headerValues.push(value);
    }
    route.headers = Object.freeze(Object.fromEntries(headerNames.map((name, i) => [name, headerValues[i]!])));
  }
  if (config.set?.priority !== undefined) route.setPriority = config.set.priority;
  if (config.rateLimit !== undefined) route.rateLimit = Object.freeze({ ...config.rateLimit });
  const compileTargets = (refs: readonly TargetRefConfig[]): readonly TargetTemplate[] => Object.freeze(refs.map(compileTarget));
  const targets = compileTargets(config.to);
  const fallback = config.fallback === undefined ? [] : compileTargets(config.fallback);
  return {
    route: Object.freeze(route),
    rank: 0,
    protocolMask,
    headerCount: headerNames.length,
    headerNames,
    headerValues,
    targets,
    fallback,
    fixedTargets: fixedBindings(targets),
    fixedFallback: fixedBindings(fallback),
    lastKey: undefined,
    lastMatch: undefined,
    lastDecision: undefined,
    continues: route.continue,
  };
}

/**
 * The bindings of templates that all name the same thing for every message, frozen so the matches
 * sharing them cannot change them; undefined when one depends on the message's key.
 */
function fixedBindings(templates: readonly TargetTemplate[]): readonly TargetBinding[] | undefined {
  const bindings: TargetBinding[] = [];
  for (const t of templates) {
    if (t.kind !== 'fixed') return undefined;
    bindings.push(t.binding);
  }
  return Object.freeze(bindings);
}

function compileTarget(ref: TargetRefConfig): TargetTemplate {
  if (ref === 'publish') return { kind: 'key' };
  if (ref === 'deadletter') return { kind: 'fixed', binding: Object.freeze({ kind: 'deadletter' }) };
  if (typeof ref === 'string') return { kind: 'fixed', binding: Object.freeze({ kind: 'target', name: ref }) };
  const literals: string[] = [];
  const slots: number[] = [];
  let from = 0;
  for (const m of ref.publish.matchAll(SLOT)) {
    literals.push(ref.publish.slice(from, m.index));
    slots.push(Number(m[1]) - 1);
    from = m.index + m[0].length;
  }
  literals.push(ref.publish.slice(from));
  return { kind: 'template', literals, slots };
}

/** The bindings of one match; exactly as long as `templates`, since a grown array reserves room for 16. */
function bind(templates: readonly TargetTemplate[], captures: readonly string[], key: string): TargetBinding[] {
  if (templates.length === 1) return [bindOne(templates[0]!, captures, key)];
  const out: TargetBinding[] = [];
  for (let i = 0; i < templates.length; i++) out.push(bindOne(templates[i]!, captures, key));
  return out;
}

function bindOne(t: TargetTemplate, captures: readonly string[], key: string): TargetBinding {
  if (t.kind === 'fixed') return t.binding;
  if (t.kind === 'key') return { kind: 'publish', key };
  let rendered = t.literals[0]!;
  for (let s = 0; s < t.slots.length; s++) rendered += captures[t.slots[s]!]! + t.literals[s + 1]!;
  return { kind: 'publish', key: rendered };
}

/** A header's value, never one inherited from Object.prototype. */
function headerOf(headers: Readonly<Record<string, string>>, name: string): string | undefined {
  return Object.hasOwn(headers, name) ? headers[name] : undefined;
}

function admits(rule: Rule, message: RoutableMessage, protocolBit: number): boolean {
  if ((rule.protocolMask & protocolBit) === 0) return false;
  // headerCount rather than headerNames.length: most rules have no header condition, and this
  // spares them a read of another object.
  for (let i = 0; i < rule.headerCount; i++) {
    if (headerOf(message.headers, rule.headerNames[i]!) !== rule.headerValues[i]) return false;
  }
  return true;
}

/** Why a rule whose pattern matched does not admit the message; undefined when it does. */
function filterLoss(rule: Rule, message: RoutableMessage): LossReason | undefined {
  const protocols = rule.route.protocols;
  if (protocols !== undefined && !protocols.includes(message.protocol)) return { kind: 'protocol', expected: protocols };
  for (let i = 0; i < rule.headerNames.length; i++) {
    const name = rule.headerNames[i]!;
    const expected = rule.headerValues[i]!;
    const actual = headerOf(message.headers, name);
    if (actual !== expected) return actual === undefined ? { kind: 'header', name, expected } : { kind: 'header', name, expected, actual };
  }
  return undefined;
}

/**
 * A trie of MQTT topic filters. Matching walks the key's levels once, following at each node the
 * literal child for that level and the `+` child, and collecting `#` values on the way, so its cost
 * grows with the key's depth (and the number of wildcard branches that really match), not with the
 * number of patterns stored.
 */

/** Called once per stored value whose pattern matches the key. */
export type TrieVisitor<V> = (value: V, captures: readonly string[]) => void;

class TrieNode<V> {
  /**
   * Literal children. Most nodes have at most one (the tail of `a/b/c/d` is a chain), so that one
   * is held in `soleLevel`/`sole`: a string comparison instead of hashing the level and probing a
   * Map, and fewer objects to pull into cache per level. A second literal child moves both into
   * `children`.
   */
  soleLevel: string | undefined = undefined;
  sole: TrieNode<V> | undefined = undefined;
  children: Map<string, TrieNode<V>> | undefined = undefined;
  /** the `+` child */
  plus: TrieNode<V> | undefined = undefined;
  /** values of patterns that end here */
  exact: V[] | undefined = undefined;
  /** values of patterns that end here with a `/#` (or are `#` itself, at the root) */
  hash: V[] | undefined = undefined;

  get empty(): boolean {
    return this.sole === undefined && this.children === undefined && this.plus === undefined && this.exact === undefined && this.hash === undefined;
  }

  child(level: string): TrieNode<V> | undefined {
    if (this.sole !== undefined) return level === this.soleLevel ? this.sole : undefined;
    return this.children?.get(level);
  }

  addChild(level: string): TrieNode<V> {
    const found = this.child(level);
    if (found !== undefined) return found;
    const created = new TrieNode<V>();
    if (this.sole !== undefined) {
      this.children = new Map([[this.soleLevel!, this.sole], [level, created]]);
      this.sole = this.soleLevel = undefined;
    } else if (this.children !== undefined) {
      this.children.set(level, created);
    } else {
      this.sole = created;
      this.soleLevel = level;
    }
    return created;
  }

  removeChild(level: string): void {
    if (this.sole !== undefined) {
      if (level === this.soleLevel) this.sole = this.soleLevel = undefined;
      return;
    }
    const children = this.children;
    if (children === undefined) return;
    children.delete(level);
    if (children.size === 1) {
      const [onlyLevel, only] = children.entries().next().value!;
      this.soleLevel = onlyLevel;
      this.sole = only;
      this.children = undefined;
    } else if (children.size === 0) {
      this.children = undefined;
    }
  }
}

/** Removes one occurrence of `value`; an emptied list becomes undefined. Returns whether it was there. */
function removeFrom<V>(list: V[] | undefined, value: V): V[] | undefined | false {
  if (list === undefined) return false;
  const at = list.indexOf(value);
  if (at < 0) return false;
  list.splice(at, 1);
  return list.length > 0 ? list : undefined;
}

/**
 * The explicit DFS stack of one match. An explicit stack rather than recursion, because a pattern
 * may have thousands of levels (a 65535-byte filter of `+/+/...`), which would overflow the call
 * stack. Pooled so a match allocates nothing but the key's level strings, yet a visitor may
 * still match again on the same trie.
 */
class MatchScratch<V> {
  readonly nodes: TrieNode<V>[] = [];
  readonly depths: number[] = [];
  /** how many captures the frame's parent had */
  readonly capLens: number[] = [];
  /** the level a `+` frame captures; undefined for a literal frame */
  readonly pending: (string | undefined)[] = [];
  /** the key's levels; only the first n (the key's depth) are current */
  readonly levels: string[] = [];
  /** offsets[d] = index in the key where level d starts */
  readonly offsets: number[] = [];
  readonly captures: string[] = [];
}

export class TopicTrie<V> {
  private readonly root = new TrieNode<V>();
  private readonly pool: MatchScratch<V>[] = [];
  private count = 0;

  /** Number of values stored. */
  get size(): number {
    return this.count;
  }

  /**
   * Stores `value` under `pattern`, an MQTT topic filter. The pattern must already be valid
   * (see `patternProblem`): `#` only as the whole last level, `+` only as a whole level.
   */
  add(pattern: string, value: V): void {
    const levels = pattern.split('/');
    let node = this.root;
    for (let i = 0; i < levels.length; i++) {
      const level = levels[i]!;
      if (level === '#') {
        // `a/#` is stored on the node of `a`, because it also matches `a` itself [MQTT-4.7.1-2].
        (node.hash ??= []).push(value);
        this.count++;
        return;
      }
      if (level === '+') {
        node = node.plus ??= new TrieNode<V>();
        continue;
      }
      node = node.addChild(level);
    }
    (node.exact ??= []).push(value);
    this.count++;
  }

  /**
   * Removes one occurrence of `value` stored under `pattern`, and the nodes left empty, so a
   * trie whose entries come and go (the bus's subscriptions) does not grow. Returns whether the
   * value was there.
   */
  remove(pattern: string, value: V): boolean {
    const levels = pattern.split('/');
    const path: { node: TrieNode<V>; level: string }[] = [];
    let node = this.root;
    let removed: V[] | undefined | false = false;
    for (let i = 0; i <= levels.length; i++) {
      if (i === levels.length) {
        removed = removeFrom(node.exact, value);
        if (removed !== false) node.exact = removed;
        break;
      }
      const level = levels[i]!;
      if (level === '#') {
        removed = removeFrom(node.hash, value);
        if (removed !== false) node.hash = removed;
        break;
      }
      const next = level === '+' ? node.plus : node.child(level);
      if (next === undefined) return false;
      path.push({ node, level });
      node = next;
    }
    if (removed === false) return false;
    this.count--;
    for (let i = path.length - 1; i >= 0 && node.empty; i--) {
      const { node: parent, level } = path[i]!;
      if (level === '+') parent.plus = undefined;
      else parent.removeChild(level);
      node = parent;
    }
    return true;
  }

  /**
   * Calls `visit` for every value whose pattern matches `key`, in no particular order. `captures`
   * holds the levels matched by `+` and `#` in pattern order (`#` captures the rest of the key as
   * written, '' when it matched no level); the array is reused, so copy it to keep it.
   */
  match(key: string, visit: TrieVisitor<V>): void {
    const scratch = this.pool.pop() ?? new MatchScratch<V>();
    try {
      this.walk(key, visit, scratch);
    } finally {
      this.pool.push(scratch);
    }
  }

  private walk(key: string, visit: TrieVisitor<V>, s: MatchScratch<V>): void {
    const { levels, offsets, nodes, depths, capLens, pending, captures } = s;
    // Split once, into reused arrays rather than a fresh one from split().
    let n = 0;
    let from = 0;
    for (;;) {
      const slash = key.indexOf('/', from);
      offsets[n] = from;
      if (slash < 0) {
        levels[n++] = key.slice(from);
        break;
      }
      levels[n++] = key.slice(from, slash);
      from = slash + 1;
    }
    // Past the end, so that a `#` matching zero levels (`a/#` on `a`) captures ''.
    offsets[n] = key.length + 1;
    // Keys starting with `$` are not matched by filters whose first level is a wildcard
    // [MQTT-4.7.2-1]: only the root's `+` and `#` are skipped, `$SYS/#` still matches.
    const dollar = key.charCodeAt(0) === 0x24;

    nodes[0] = this.root;
    depths[0] = 0;
    capLens[0] = 0;
    pending[0] = undefined;
    let sp = 1;
    while (sp > 0) {
      sp--;
      let node = nodes[sp]!;
      let depth = depths[sp]!;
      const capLen = capLens[sp]!;
      const captured = pending[sp];
      // Drop what a sibling subtree (or an earlier match) captured; keep the ancestors' captures.
      while (captures.length > capLen) captures.pop();
      if (captured !== undefined) captures.push(captured);
      // Literal children are followed in place; only `+` branches wait on the stack.
      for (;;) {
        const wildcardsAllowed = depth > 0 || !dollar;
        // `#` matches the rest, including zero levels: `a/#` matches `a` [MQTT-4.7.1-2].
        const hash = node.hash;
        if (hash !== undefined && wildcardsAllowed) {
          captures.push(key.slice(offsets[depth]!));
          for (let i = 0; i < hash.length; i++) visit(hash[i]!, captures);
          captures.pop();
        }
        if (depth === n) {
          const exact = node.exact;
          if (exact !== undefined) for (let i = 0; i < exact.length; i++) visit(exact[i]!, captures);
          break;
        }
        const level = levels[depth]!;
        // `+` matches exactly one level, an empty one too (`a/+` matches `a/`) [MQTT-4.7.1-2].
        if (node.plus !== undefined && wildcardsAllowed) {
          nodes[sp] = node.plus;
          depths[sp] = depth + 1;
          capLens[sp] = captures.length;
          pending[sp] = level;
          sp++;
        }
        const child = node.child(level);
        if (child === undefined) break;
        node = child;
        depth++;
      }
    }
  }
}
